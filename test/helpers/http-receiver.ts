import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A local HTTP server that keeps every request body it reads (an OTLP/HTTP receiver, for tests). */
export interface BodyReceiver {
  url: string;
  bodies: Buffer[];
  close(): Promise<void>;
}

/** Answers each request with `status(n)` (n counts from 1), 200 unless told otherwise. */
export async function startBodyReceiver(
  status: (n: number) => number = () => 200,
): Promise<BodyReceiver> {
  const bodies: Buffer[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks));
      res.writeHead(status(bodies.length)).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}
