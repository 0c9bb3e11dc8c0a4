import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts a worker_threads Worker on the module `name` beside the calling module (`callerUrl`:
 * its `import.meta.url`).
 *
 * Under tsx or vitest the caller and the thread are TypeScript. Node 20 does not apply module
 * loader hooks given in a Worker's execArgv (`execArgv: [...process.execArgv, '--import', 'tsx']`
 * still fails with ERR_UNKNOWN_FILE_EXTENSION, nodejs/node#47747), so a small bootstrap registers
 * tsx inside the thread, then imports it. From dist/ the thread is plain .js.
 */
export function startModuleThread(
  callerUrl: string,
  name: string,
  options: Omit<WorkerOptions, 'eval'> = {},
): Worker {
  const fromSource = callerUrl.endsWith('.ts');
  const threadUrl = new URL(`./${name}.${fromSource ? 'ts' : 'js'}`, callerUrl);
  if (!fromSource) return new Worker(threadUrl, options);
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap =
    `import(${JSON.stringify(tsx)}).then((tsx) => {` +
    ` tsx.register(); return import(${JSON.stringify(threadUrl.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
