/**
 * Fixed ports for a broker that restarts on the same address. They are taken below the kernel's
 * ephemeral range (32768 and up on Linux), so that while the broker is down no client's outgoing
 * connection can be given the broker's port as its own local port (a TCP self-connect would then
 * look like a broker answering).
 */
import { createServer } from 'node:net';

const LOW = 20_000;
const HIGH = 32_000;

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** `count` distinct loopback ports in [20000, 32000) that are free now. */
export async function fixedPorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 1000) throw new Error('no free ports in 20000-31999');
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (!ports.includes(port) && (await isFree(port))) ports.push(port);
  }
  return ports;
}
