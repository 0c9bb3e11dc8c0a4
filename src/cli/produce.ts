/**
 * `streamscore produce`: sends requests to a request topic — the records of a file, or N made up
 * from the served model's card — optionally at a fixed rate, with progress and a summary. For load
 * tests, demos and replaying a data set; it does not wait for answers (`streamscore score` does).
 *
 * Generated requests look like real ones where the card says what real ones look like:
 * - InferenceRequest topics get one tensor per card input, of the card's shape (a free dimension
 *   is 1). A card with `features` gets the input row as the model saw it in training (numeric
 *   columns standard normal, one-hot groups one 1); otherwise values uniform in [0, 1).
 * - Domain topics (mappings.byTopic) get records of the request schema: a field behind a numeric
 *   feature is drawn around the card's mean and std (log-normal when the mean is positive, so
 *   amounts and ages stay positive; a boolean is true with probability `mean`), a field behind a
 *   one-hot feature takes a value of its vocabulary, other fields are null when nullable and
 *   avsc's random value otherwise.
 */
import path from 'node:path';
import { Command } from 'commander';
import { Partitioners } from 'kafkajs';
import type avro from 'avsc';
import { clientCodecFor, type ClientCodec } from '../codec/topics.js';
import { requireBrokers, type StreamscoreConfig } from '../config/index.js';
import { StreamscoreError } from '../errors.js';
import { checkTopics, createKafka } from '../kafka/kafkajs.js';
import type { FeatureCard, ModelCard } from '../model/card.js';
import { mulberry32 } from '../model/digits-data.js';
import { readModelCard, resolveModelDir } from '../model/repository.js';
import {
  configFrom,
  EXIT_INTERRUPTED,
  EXIT_OK,
  failure,
  signalsFromProcess,
  stderrLogger,
  type BatchIo,
  type ConfigFlags,
} from './batch-io.js';
import { Progress, duration } from './progress.js';
import { countRecords, readRecords, recordFileFormat } from './record-files.js';
import { positiveInt, positiveNumber, withConfigFlags } from './flags.js';

export interface ProduceFlags extends ConfigFlags {
  topic?: string;
  file?: string;
  generate?: number;
  /** Requests per second; default as fast as the broker takes them. */
  rate?: number;
  /** Request field whose value is the record key; default the id field. */
  keyField?: string;
  /** Seed for generated requests (the same seed, the same requests). */
  seed?: number;
}

/** Most requests in one produce call. */
const MAX_BATCH = 500;
const INFERENCE_REQUEST = 'io.streamscore.InferenceRequest';

/**
 * A token bucket: `rate` tokens a second, at most `burst` saved up. Pure: the caller passes the
 * time, so it is tested without a clock.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = Math.max(this.last, now);
  }

  /** Takes up to `wanted` whole tokens; returns how many it took. */
  take(wanted: number, now: number): number {
    this.refill(now);
    // The epsilon keeps float rounding (0.1 + 0.2 …) from withholding a whole token.
    const granted = Math.min(wanted, Math.floor(this.tokens + 1e-9));
    this.tokens -= granted;
    return granted;
  }

  /** Milliseconds until the next whole token. */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens + 1e-9 >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

/** The model that answers `topic`'s requests, as the worker picks it, and its version policy. */
export function servedModelFor(
  config: StreamscoreConfig,
  topic: string,
): { name: string; version: string } {
  const mapped = config.mappings.byTopic.find((m) => m.topic === topic)?.model;
  const byTopic = config.model.byTopic
    .map((entry) => entry.split('='))
    .find(([t]) => t === topic)?.[1];
  const name = mapped ?? byTopic ?? config.model.name;
  if (name === config.model.name) return { name, version: config.model.version };
  const additional = config.model.additional
    .map((entry) => entry.split('@'))
    .find(([n]) => n === name);
  return { name, version: additional?.[1] ?? 'latest' };
}

/** A standard normal draw (Box–Muller). */
function normal(random: () => number): number {
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

const pick = <T>(items: readonly T[], random: () => number): T =>
  items[Math.floor(random() * items.length)]!;

const featureWidth = (f: FeatureCard) => (f.kind === 'numeric' ? 1 : f.vocabulary.length);

/** The card's input row with `features`: numeric columns N(0, 1), each one-hot group one 1. */
function featureRow(features: readonly FeatureCard[], random: () => number): number[] {
  const row: number[] = [];
  for (const f of features) {
    if (f.kind === 'numeric') row.push(normal(random));
    else {
      const hot = Math.floor(random() * f.vocabulary.length);
      for (let k = 0; k < f.vocabulary.length; k++) row.push(k === hot ? 1 : 0);
    }
  }
  return row;
}

function tensorsFor(card: ModelCard, random: () => number) {
  const features = card.features;
  return card.inputs.map((input) => {
    const shape = input.shape.map((d) => d ?? 1);
    const size = shape.reduce((n, d) => n * d, 1);
    const values =
      features !== undefined &&
      card.inputs.length === 1 &&
      features.reduce((n, f) => n + featureWidth(f), 0) === size
        ? featureRow(features, random)
        : Array.from({ length: size }, () => random());
    const data = Buffer.alloc(size * 4);
    values.forEach((v, i) => data.writeFloatLE(v, i * 4));
    return { name: input.name, shape, data };
  });
}

interface FieldRecipe {
  field: string;
  feature: FeatureCard;
}

/** Which request field feeds which card feature (mapping `inputs`, else by name). */
function fieldRecipes(config: StreamscoreConfig, topic: string, card: ModelCard): FieldRecipe[] {
  const features = new Map((card.features ?? []).map((f) => [f.name, f]));
  const mapping = config.mappings.byTopic.find((m) => m.topic === topic);
  if (mapping?.inputs === undefined) {
    return [...features.values()].map((feature) => ({ field: feature.name, feature }));
  }
  const recipes: FieldRecipe[] = [];
  for (const input of mapping.inputs) {
    const base = features.get(input.feature ?? input.field);
    if (input.vocabulary !== undefined) {
      recipes.push({
        field: input.field,
        feature: { name: input.field, kind: 'oneHot', vocabulary: input.vocabulary },
      });
    } else if (base?.kind === 'numeric' || input.mean !== undefined) {
      recipes.push({
        field: input.field,
        feature: {
          name: input.field,
          kind: 'numeric',
          mean: input.mean ?? (base?.kind === 'numeric' ? base.mean : 0),
          std: input.std ?? (base?.kind === 'numeric' ? base.std : 1),
        },
      });
    } else if (base !== undefined) {
      recipes.push({ field: input.field, feature: base });
    }
  }
  return recipes;
}

const branchesOf = (type: avro.Type): avro.Type[] =>
  type.typeName.startsWith('union') ? (type as unknown as { types: avro.Type[] }).types : [type];

/** A value of `type` for a numeric feature. */
function numericValue(
  type: avro.Type,
  feature: Extract<FeatureCard, { kind: 'numeric' }>,
  random: () => number,
): unknown {
  const concrete = branchesOf(type).find((t) => t.typeName !== 'null') ?? type;
  if (concrete.typeName === 'boolean') return random() < Math.min(1, Math.max(0, feature.mean));
  let x: number;
  if (feature.mean > 0) {
    // Log-normal with the feature's mean and std: positive, skewed like amounts and ages.
    const sigma2 = Math.log(1 + (feature.std / feature.mean) ** 2);
    x = Math.exp(Math.log(feature.mean) - sigma2 / 2 + Math.sqrt(sigma2) * normal(random));
  } else {
    x = feature.mean + feature.std * normal(random);
  }
  if (concrete.typeName === 'int' || concrete.typeName === 'long') return Math.round(x);
  if (concrete.typeName === 'float' || concrete.typeName === 'double') {
    return Math.round(x * 100) / 100;
  }
  return concrete.random();
}

function categoricalValue(type: avro.Type, vocabulary: readonly string[], random: () => number) {
  const concrete = branchesOf(type).find((t) => t.typeName !== 'null') ?? type;
  if (concrete.typeName === 'enum') {
    const symbols = (concrete as unknown as { symbols: string[] }).symbols;
    const known = vocabulary.filter((v) => symbols.includes(v));
    return pick(known.length > 0 ? known : symbols, random);
  }
  if (concrete.typeName === 'string') return pick(vocabulary, random);
  return concrete.random();
}

/**
 * Makes request `index` for `codec`'s topic from the served model's card. Deterministic for a
 * seed: the same seed gives the same requests.
 */
export async function requestGenerator(
  config: StreamscoreConfig,
  codec: ClientCodec,
  seed: number,
  runId: string,
): Promise<(index: number) => Record<string, unknown>> {
  const model = servedModelFor(config, codec.topic);
  const card = await readModelCard(
    await resolveModelDir(config.model.repository, model.name, model.version),
  );
  const random = mulberry32(seed);
  const type = codec.requestType as avro.types.RecordType;
  const idType = type.fields.find((f) => f.name === codec.idField)?.type;
  const idFor = (index: number) =>
    idType !== undefined && branchesOf(idType).some((t) => t.typeName === 'string')
      ? `${runId}-${index}`
      : index;

  if (type.name === INFERENCE_REQUEST) {
    return (index) => ({
      id: idFor(index),
      model: null,
      modelVersion: null,
      requestedAt: Date.now(),
      inputs: tensorsFor(card, random),
    });
  }
  const recipes = new Map(fieldRecipes(config, codec.topic, card).map((r) => [r.field, r]));
  return (index) => {
    const record: Record<string, unknown> = {};
    for (const field of type.fields) {
      const recipe = recipes.get(field.name);
      if (field.name === codec.idField) record[field.name] = idFor(index);
      else if (recipe?.feature.kind === 'numeric') {
        record[field.name] = numericValue(field.type, recipe.feature, random);
      } else if (recipe?.feature.kind === 'oneHot') {
        record[field.name] = categoricalValue(field.type, recipe.feature.vocabulary, random);
      } else if (branchesOf(field.type).some((t) => t.typeName === 'null')) {
        record[field.name] = null;
      } else {
        record[field.name] = field.type.random();
      }
    }
    return record;
  };
}

/** The requests to send, each with its index, and how many there are. */
async function requestSource(
  flags: ProduceFlags,
  config: StreamscoreConfig,
  codec: ClientCodec,
): Promise<{ total: number; records: AsyncIterable<Record<string, unknown>> }> {
  if ((flags.file === undefined) === (flags.generate === undefined)) {
    throw new StreamscoreError('CONFIG_INVALID', 'give either --file <file> or --generate <n>');
  }
  if (flags.file !== undefined) {
    const file = flags.file;
    recordFileFormat(file);
    const base = path.basename(file);
    const { idField } = codec;
    return {
      total: await countRecords(file),
      records: (async function* () {
        for await (const { index, record } of readRecords(file, {
          type: codec.requestType,
          optionalFields: [idField],
        })) {
          const given = record[idField];
          yield given === undefined || given === null || given === ''
            ? { ...record, [idField]: `${base}:${index}` }
            : record;
        }
      })(),
    };
  }
  const total = flags.generate!;
  const runId = `gen-${Date.now().toString(36)}`;
  const make = await requestGenerator(config, codec, flags.seed ?? Date.now() >>> 0, runId);
  return {
    total,
    records: (async function* () {
      for (let i = 0; i < total; i++) yield make(i);
    })(),
  };
}

function keyOf(record: Record<string, unknown>, field: string): string | null {
  const value = record[field];
  if (value === undefined || value === null) return null;
  return typeof value === 'object' ? JSON.stringify(value) : String(value as string | number);
}

export interface ProduceSummary {
  sent: number;
  total: number;
  seconds: number;
}

/** Runs `streamscore produce`; resolves with the exit code. */
export async function runProduce(flags: ProduceFlags, io: BatchIo): Promise<number> {
  let config: StreamscoreConfig;
  try {
    config = configFrom(flags, io);
    requireBrokers(config);
  } catch (err) {
    return failure(err, io);
  }
  const log = stderrLogger(flags);
  const topic = flags.topic ?? config.topics.requests[0]!;
  const kafka = createKafka(config.kafka, log);
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  let connected = false;
  let progress: Progress | null = null;
  let sent = 0;
  try {
    const codec = await clientCodecFor(config, topic, { log });
    const keyField = flags.keyField ?? codec.idField;
    const fields = (codec.requestType as avro.types.RecordType).fields.map((f) => f.name);
    if (!fields.includes(keyField)) {
      throw new StreamscoreError(
        'CONFIG_INVALID',
        `--key-field ${keyField} is not a field of the request records (${fields.join(', ')})`,
      );
    }
    const { total, records } = await requestSource(flags, config, codec);
    await checkTopics(kafka, [topic]);
    await producer.connect();
    connected = true;
    const bar = (progress = new Progress({
      label: 'produce',
      unit: 'requests',
      total,
      isTTY: io.isTTY,
      write: io.stderr,
      ...(io.progressEveryMs === undefined ? {} : { everyMs: io.progressEveryMs }),
    }));
    const bucket =
      flags.rate === undefined
        ? null
        : new TokenBucket(flags.rate, Math.max(1, Math.ceil(flags.rate / 20)), Date.now());

    const iterator = records[Symbol.asyncIterator]();
    let exhausted = false;
    while (!exhausted && !io.stop?.aborted) {
      let room = MAX_BATCH;
      if (bucket !== null) {
        let granted = bucket.take(MAX_BATCH, Date.now());
        while (granted === 0 && !io.stop?.aborted) {
          await new Promise((resolve) => setTimeout(resolve, bucket.waitMs(Date.now())));
          granted = bucket.take(MAX_BATCH, Date.now());
        }
        room = granted;
      }
      const messages: { key: string | null; value: Buffer }[] = [];
      while (messages.length < room) {
        const next = await iterator.next();
        if (next.done) {
          exhausted = true;
          break;
        }
        messages.push({
          key: keyOf(next.value, keyField),
          value: await codec.encodeRequest(next.value),
        });
      }
      if (messages.length > 0) {
        await producer.send({ topic, messages });
        sent += messages.length;
        bar.update(sent);
      }
    }
    await iterator.return?.();
    const seconds = bar.elapsed();
    bar.stop();
    io.stdout(
      `sent ${sent} of ${total} requests to ${topic} in ${duration(seconds)} (${Math.round(sent / Math.max(seconds, 1e-3))}/s${flags.rate === undefined ? '' : `, asked for ${flags.rate}/s`}); key: ${keyField}\n`,
    );
    return sent < total ? EXIT_INTERRUPTED : EXIT_OK;
  } catch (err) {
    progress?.stop();
    if (sent > 0) io.stderr(`${sent} requests were sent before the failure\n`);
    return failure(err, io);
  } finally {
    if (connected) await producer.disconnect().catch(() => undefined);
  }
}

/** Adds `streamscore produce` to the program. */
export function registerProduceCommand(program: Command): Command {
  return withConfigFlags(program.command('produce'))
    .description(
      'send requests to a request topic: the records of a file, or N generated from the served model card; optionally at a fixed rate',
    )
    .option('-t, --topic <topic>', 'request topic (default: the first of topics.requests)')
    .option('-f, --file <file>', 'records to send: .jsonl/.ndjson, .csv with a header row, .avro')
    .option('-g, --generate <n>', 'send n requests made up from the model card', positiveInt)
    .option('-r, --rate <n>', 'requests per second (default: as fast as possible)', positiveNumber)
    .option('-k, --key-field <field>', 'request field used as the record key (default: the id)')
    .option('--seed <n>', 'seed for --generate (the same seed, the same requests)', positiveInt)
    .option('--log-level <level>', 'log level on stderr', 'warn')
    .addHelpText(
      'after',
      '\nRecords without an id get <file name>:<index> (--file) or gen-<run>-<index> (--generate).\nExit status: 0 all sent, 1 failed, 78 configuration error, 130 interrupted.',
    )
    .action(async (flags: ProduceFlags) => {
      const signals = signalsFromProcess();
      const code = await runProduce(flags, {
        stdout: (text) => process.stdout.write(text),
        stderr: (text) => process.stderr.write(text),
        isTTY: process.stderr.isTTY === true,
        stop: signals.stop,
        kill: signals.kill,
      });
      signals.dispose();
      process.exit(code);
    });
}
