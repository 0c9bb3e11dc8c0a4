import { spawn } from 'node:child_process';

/**
 * An OTLP/HTTP receiver in its own process: it reads each body, counts its bytes and answers 200.
 * What an exporter pays to send spans, without a backend's cost of storing them.
 */
export async function startDiscardingReceiver(): Promise<{
  url: string;
  pid: number;
  bytes: () => Promise<number>;
  stop: () => void;
}> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `let n = 0;
       const s = require('node:http').createServer((req, res) => {
         if (req.url === '/bytes') { res.end(String(n)); return; }
         req.on('data', (c) => { n += c.length; });
         req.on('end', () => { res.setHeader('content-type', 'application/x-protobuf'); res.end(); });
       });
       s.listen(0, '127.0.0.1', () => console.log(s.address().port));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: child.pid!,
    bytes: async () => Number(await (await fetch(`${url}/bytes`)).text()),
    stop: () => child.kill(),
  };
}
