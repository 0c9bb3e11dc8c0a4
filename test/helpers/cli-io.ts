/** What a CLI command printed: its stdout and stderr writes, in order, and the io to give it. */
export function capturedIo() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    io: { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t) },
  };
}
