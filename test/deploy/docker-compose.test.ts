/**
 * Static checks of Dockerfile and docker-compose.yml. Nothing here builds or starts a container
 * (CI has no Docker engine); the tests read both files and hold them against what the worker
 * actually needs: the config schema, the files it reads at run time, how it stops.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { configKeys, loadConfig, type StreamscoreConfig } from '../../src/config/index.js';
import { APICURIO_VERSION } from '../../src/registry/local-registry.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const posix = path.posix;

// ---------------------------------------------------------------------------------------------
// Dockerfile: a small reader for the instructions this repository uses.

interface Copy {
  /** Stage name for COPY --from, undefined for the build context. */
  from?: string;
  /** Context-relative path, or an absolute path in the other stage. */
  source: string;
  /** Where the source ends up in the image (for a directory: where its contents go). */
  target: string;
}

interface Stage {
  name?: string;
  image: string;
  workdir: string;
  copies: Copy[];
  runs: string[];
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

/** Logical lines: comments dropped, backslash continuations joined. */
function logicalLines(text: string): string[] {
  const lines: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    if (raw.trim().startsWith('#')) continue;
    if (raw.trimEnd().endsWith('\\')) {
      current += raw.trimEnd().slice(0, -1) + ' ';
      continue;
    }
    current += raw;
    if (current.trim() !== '') lines.push(current.trim());
    current = '';
  }
  return lines;
}

function parseDockerfile(text: string): Stage[] {
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  const substitute = (value: string) =>
    value.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => globalArgs[a ?? b] ?? '');
  for (const line of logicalLines(text)) {
    const [, op = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const stage = stages.at(-1);
    switch (op.toUpperCase()) {
      case 'ARG': {
        const [, name = '', value] = /^(\w+)(?:=(.*))?$/.exec(rest) ?? [];
        if (!stage && value !== undefined) globalArgs[name] = value;
        break;
      }
      case 'FROM': {
        const words = rest.split(/\s+/).filter((w) => !w.startsWith('--'));
        const image = substitute(words[0] ?? '');
        const base = stages.find((s) => s.name === image);
        stages.push({
          name: words[1]?.toUpperCase() === 'AS' ? words[2] : undefined,
          image: base ? base.image : image,
          workdir: base ? base.workdir : '/',
          copies: base ? [...base.copies] : [],
          runs: [],
        });
        break;
      }
      case 'WORKDIR':
        stage!.workdir = posix.resolve(stage!.workdir, rest);
        break;
      case 'COPY': {
        const words = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
        const paths = words.filter((w) => !w.startsWith('--'));
        const dest = paths.pop()!;
        const destDir = posix.resolve(stage!.workdir, dest);
        for (const source of paths) {
          // Docker copies a directory's contents to dest; a file to dest, or into it when dest
          // ends with '/'. Sources from another stage are taken as directories unless they
          // have an extension.
          const isDir = from
            ? posix.extname(source) === ''
            : existsSync(path.join(ROOT, source)) &&
              statSync(path.join(ROOT, source)).isDirectory();
          const target =
            !isDir && dest.endsWith('/') ? posix.join(destDir, posix.basename(source)) : destDir;
          stage!.copies.push({ from, source: from ? source : posix.normalize(source), target });
        }
        break;
      }
      case 'RUN':
        stage!.runs.push(rest);
        break;
      case 'USER':
        stage!.user = rest;
        break;
      case 'ENTRYPOINT':
        stage!.entrypoint = JSON.parse(rest) as string[];
        break;
      case 'CMD':
        stage!.cmd = JSON.parse(rest) as string[];
        break;
    }
  }
  return stages;
}

/** Where an absolute path in a stage's image came from: a COPY source plus the rest of the path. */
function originOf(stage: Stage, imagePath: string): { from?: string; source: string } | undefined {
  for (const copy of [...stage.copies].reverse()) {
    if (imagePath === copy.target || imagePath.startsWith(copy.target + '/')) {
      const rest = imagePath.slice(copy.target.length).replace(/^\//, '');
      return { from: copy.from, source: rest ? posix.join(copy.source, rest) : copy.source };
    }
  }
  return undefined;
}

const stages = parseDockerfile(read('Dockerfile'));
const runtime = stages.at(-1)!;
const stageNamed = (name: string | undefined) => stages.find((s) => s.name === name);

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

type EnvValue = string | number | boolean | null;

interface Service {
  image?: string;
  build?: string | { context?: string };
  hostname?: string;
  command?: string | string[];
  environment?: Record<string, EnvValue> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[] };
  stop_grace_period?: string;
}

// merge: compose honours YAML merge keys (<<), which share the broker and topic settings.
const compose = parseYaml(read('docker-compose.yml'), { merge: true }) as {
  services: Record<string, Service>;
};
const services = compose.services;

/** The environment as the container sees it (compose turns numbers and booleans into text). */
function environmentOf(name: string): Record<string, string> {
  const env = services[name]?.environment ?? {};
  const entries: [string, EnvValue][] = Array.isArray(env)
    ? env.map((item) => {
        const at = item.indexOf('=');
        return at < 0 ? [item, null] : [item.slice(0, at), item.slice(at + 1)];
      })
    : Object.entries(env);
  return Object.fromEntries(
    entries.map(([key, value]) => {
      if (value === null) {
        throw new Error(`${name}: ${key} takes its value from the host; give it one in the file`);
      }
      return [key, String(value)];
    }),
  );
}

/** Services that run the streamscore image: built from this repository, or the image it tags. */
const builtImages = new Set(
  Object.values(services)
    .filter((s) => s.build !== undefined && s.image)
    .map((s) => s.image),
);
const streamscoreServices = Object.entries(services)
  .filter(([, s]) => s.build !== undefined || builtImages.has(s.image))
  .map(([name]) => name);

/** The configuration a service's worker would load: its environment, files read from the image. */
function configOf(name: string): StreamscoreConfig {
  const env = environmentOf(name);
  if (env.STREAMSCORE_CONFIG !== undefined) {
    const origin = originOf(runtime, posix.resolve(runtime.workdir, env.STREAMSCORE_CONFIG));
    if (!origin || origin.from) {
      throw new Error(`${name}: STREAMSCORE_CONFIG names a file the Dockerfile does not copy`);
    }
    env.STREAMSCORE_CONFIG = path.join(ROOT, origin.source);
  }
  return loadConfig({ env });
}

const kafkaName = Object.keys(services).find((name) =>
  services[name]!.image?.startsWith('apache/kafka:'),
)!;

function listeners(value: string | undefined): { name: string; host: string; port: string }[] {
  return (value ?? '').split(',').map((entry) => {
    const match = /^(\w+):\/\/([^:]*):(\d+)$/.exec(entry.trim());
    if (!match) throw new Error(`not a Kafka listener: "${entry}"`);
    return { name: match[1]!, host: match[2]!, port: match[3]! };
  });
}

function dependency(from: string, on: string): string | undefined {
  const deps = services[from]?.depends_on;
  if (Array.isArray(deps)) return deps.includes(on) ? 'service_started' : undefined;
  const dep = deps?.[on];
  return dep ? (dep.condition ?? 'service_started') : undefined;
}

/** A compose duration ("30s", "1m30s", "1500ms") in milliseconds. */
function durationMs(text: string): number {
  const units: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(us|ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw new Error(`not a compose duration: "${text}"`);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * units[p[2]!]!, 0);
}

/**
 * Stopping drains in-flight requests for up to shutdown.drainTimeoutMs, then commits offsets,
 * leaves the group and disposes the model; compose kills the container when stop_grace_period
 * runs out. This much is kept for the steps after the drain.
 */
const AFTER_DRAIN_MS = 5_000;

describe('docker-compose.yml', () => {
  it('runs streamscore as a one-shot topics service and a worker built from this repository', () => {
    expect(streamscoreServices).toEqual(expect.arrayContaining(['topics', 'worker']));
    expect(services.worker!.build).toBeDefined();
    expect(services.worker!.command).toBeUndefined(); // the image's CMD: run
    expect(runtime.cmd).toEqual(['run']);
    const command = services.topics!.command;
    expect(Array.isArray(command) ? command.slice(0, 2) : command).toEqual(['topics', 'create']);
  });

  const envVars = new Set([...configKeys().map((k) => k.env), 'STREAMSCORE_CONFIG']);
  it.each(streamscoreServices)(
    '%s: every environment variable is a streamscore setting (a typo would be ignored)',
    (name) => {
      const unknown = Object.keys(environmentOf(name)).filter((key) => !envVars.has(key));
      expect(unknown, `not STREAMSCORE_* settings (see config/README.md)`).toEqual([]);
    },
  );

  it.each(streamscoreServices)('%s: loadConfig accepts its environment', (name) => {
    expect(() => configOf(name)).not.toThrow();
  });

  it("points the worker at the broker's advertised listener, by a name the network resolves", () => {
    const kafka = environmentOf(kafkaName);
    const advertised = listeners(kafka.KAFKA_ADVERTISED_LISTENERS);
    const bound = listeners(kafka.KAFKA_LISTENERS);
    const controllers = (kafka.KAFKA_CONTROLLER_LISTENER_NAMES ?? '').split(',');
    const brokers = configOf('worker').kafka.brokers;
    expect(brokers.length).toBeGreaterThan(0);
    for (const broker of brokers) {
      const listener = advertised.find((l) => `${l.host}:${l.port}` === broker);
      expect(listener, `${broker} is not in KAFKA_ADVERTISED_LISTENERS`).toBeDefined();
      expect(controllers).not.toContain(listener!.name);
      expect(bound).toContainEqual(
        expect.objectContaining({ name: listener!.name, port: listener!.port }),
      );
      expect([kafkaName, services[kafkaName]!.hostname]).toContain(listener!.host);
    }
  });

  it('creates exactly the topics the worker consumes and produces, on the same broker', () => {
    const creator = configOf('topics');
    const worker = configOf('worker');
    expect(creator.topics).toEqual(worker.topics);
    expect(creator.kafka.brokers).toEqual(worker.kafka.brokers);
  });

  it('starts the worker only once the topics exist, and creates them once the broker is up', () => {
    expect(dependency('worker', 'topics')).toBe('service_completed_successfully');
    expect(dependency('topics', kafkaName)).toBe('service_healthy');
    const test = services[kafkaName]!.healthcheck?.test;
    expect(Array.isArray(test) ? test.join(' ') : test).toMatch(
      /kafka-broker-api-versions\.sh --bootstrap-server \S+:\d+/,
    );
    // Without auto-creation a topic missing here makes the worker fail its start-up check.
    expect(environmentOf(kafkaName).KAFKA_AUTO_CREATE_TOPICS_ENABLE).toBe('false');
  });

  it('gives the worker longer to stop than its drain timeout', () => {
    const drainMs = configOf('worker').shutdown.drainTimeoutMs;
    const grace = services.worker!.stop_grace_period;
    expect(grace, 'without stop_grace_period compose kills the worker after 10 s').toBeDefined();
    expect(durationMs(grace!)).toBeGreaterThanOrEqual(drainMs + AFTER_DRAIN_MS);
  });

  it('runs the Kafka version the integration tests run (kafka/pom.xml)', () => {
    const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(read('kafka/pom.xml'))?.[1];
    expect(services[kafkaName]!.image).toBe(`apache/kafka:${version}`);
  });

  it('runs the Schema Registry version the integration tests run (src/registry/local-registry.ts)', () => {
    const registries = Object.values(services).filter((s) =>
      s.image?.startsWith('apicurio/apicurio-registry:'),
    );
    expect(registries.map((s) => s.image)).toEqual([
      `apicurio/apicurio-registry:${APICURIO_VERSION}`,
    ]);
  });
});

describe('Dockerfile', () => {
  it('starts bin/streamscore.js, which exists and loads the CLI the build stage compiles', () => {
    const [command, script] = runtime.entrypoint ?? [];
    expect(command).toBe('node');
    const scriptPath = posix.resolve(runtime.workdir, script!);
    const origin = originOf(runtime, scriptPath);
    expect(origin, `${scriptPath} is not copied into the image`).toBeDefined();
    expect(origin!.from).toBeUndefined();
    expect(origin!.source).toBe('bin/streamscore.js');
    expect(existsSync(path.join(ROOT, origin!.source))).toBe(true);

    // bin/streamscore.js imports ../dist/cli/main.js: trace it to the build stage's tsc output
    // and from there to the TypeScript source.
    const imports = [...read(origin!.source).matchAll(/import\s+'(\.[^']+)'/g)].map((m) => m[1]!);
    expect(imports).not.toEqual([]);
    const tsconfig = JSON.parse(read('tsconfig.build.json')) as {
      compilerOptions: { rootDir: string; outDir: string };
    };
    for (const specifier of imports) {
      const compiled = originOf(runtime, posix.resolve(posix.dirname(scriptPath), specifier));
      expect(compiled?.from, `${specifier} must come from a build stage`).toBeDefined();
      const build = stageNamed(compiled!.from)!;
      expect(build.runs).toContain('npm run build');
      const outFile = posix.relative(
        posix.resolve(build.workdir, tsconfig.compilerOptions.outDir),
        compiled!.source,
      );
      const sourceFile = posix.join(
        tsconfig.compilerOptions.rootDir,
        outFile.replace(/\.js$/, '.ts'),
      );
      expect(existsSync(path.join(ROOT, sourceFile)), sourceFile).toBe(true);
      expect(originOf(build, posix.resolve(build.workdir, sourceFile))?.source).toBe(sourceFile);
    }
  });

  it('serves the patched dependencies: applied in the build stage, copied to the runtime', () => {
    // npm ci --ignore-scripts skips the postinstall (patch-package) that applies patches/.
    const patched = readdirSync(path.join(ROOT, 'patches')).map((f) => f.split('+')[0]!);
    expect(patched).toContain('kafkajs');
    for (const name of patched) {
      const origin = originOf(runtime, posix.resolve(runtime.workdir, 'node_modules', name));
      expect(origin?.from, `${name} must come from the build stage`).toBeDefined();
      const build = stageNamed(origin!.from)!;
      expect(originOf(build, posix.resolve(build.workdir, 'patches'))?.source).toBe('patches');
      expect(build.runs.some((run) => run.startsWith('npx patch-package'))).toBe(true);
    }
  });

  it('copies everything the package ships (package.json "files") and package.json itself', () => {
    const pkg = JSON.parse(read('package.json')) as { files: string[] };
    // kafka/ holds the Maven pom for the local development broker, which the image never runs.
    const notNeeded = new Set(['kafka']);
    const needed = [...pkg.files.filter((f) => !notNeeded.has(f)), 'package.json'];
    // Read at run time: dist (code), bin (entrypoint), schemas (Avro, found next to dist),
    // models (model.repository, relative to the working directory), package.json (--version).
    expect(needed).toEqual(expect.arrayContaining(['dist', 'bin', 'schemas', 'models', 'config']));
    const repository = loadConfig({ env: {} }).model.repository;
    for (const file of [...needed, repository]) {
      const origin = originOf(runtime, posix.resolve(runtime.workdir, file));
      expect(origin, `${file} is not copied into the runtime image`).toBeDefined();
      if (origin!.from === undefined) {
        expect(origin!.source).toBe(file);
        expect(existsSync(path.join(ROOT, file)), `${file} is missing from the repository`).toBe(
          true,
        );
      } else {
        expect(posix.relative(stageNamed(origin!.from)!.workdir, origin!.source)).toBe(file);
      }
    }
  });

  it("installs production dependencies without running the package's own build scripts", () => {
    const installs = runtime.runs.filter((run) => /\bnpm (ci|install|i)\b/.test(run));
    expect(installs).toHaveLength(1);
    expect(installs[0]).toMatch(/\bnpm ci\b[^&|;]*--omit=dev/);
    // npm ci runs the root's prepare (a tsc build): there is no TypeScript in this stage.
    expect(installs[0]).toMatch(/\bnpm ci\b[^&|;]*--ignore-scripts/);
    expect(runtime.copies.some((c) => c.source === 'src')).toBe(false);
  });

  it('runs as the unprivileged node user on the Node major version the package requires', () => {
    expect(runtime.user).toBe('node');
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines;
    const major = /(\d+)/.exec(engines.node)?.[1];
    for (const stage of stages) expect(stage.image).toMatch(new RegExp(`^node:${major}[.-]`));
  });

  it('keeps host node_modules and build outputs out of the build context', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.git', '.cache']));
  });
});
