/**
 * Domain-field mappings (config `mappings.byTopic`): a topic's requests are domain records (a
 * payment with an amount, a merchant category, a country) rather than tensors. The mapping says
 * which fields become the columns of the model's input — numbers standardised with the model
 * card's mean and std, one-hot columns from an enum or a string over a vocabulary — and which
 * fields the result record gets from the output: the top label, a label's score, the top k, a
 * threshold turned into a boolean, every score.
 *
 * A layout is compiled per model version (its card's constants), so a hot-swapped or canary
 * version with new constants is fed with its own; at start every version a topic can reach is
 * compiled, so a mapping that does not fit fails then, naming the field.
 */
import avro from 'avsc';
import type {
  FieldMappingConfig,
  InputMappingConfig,
  OutputMappingConfig,
} from '../config/schema.js';
import { StreamscoreError } from '../errors.js';
import type { FeatureCard } from '../model/card.js';
import type { ModelInfo } from '../model/types.js';
import type { InferenceRequest, InferenceResult, NamedTensor } from './types.js';

type Column =
  | { kind: 'numeric'; field: string; mean: number; std: number; ifNull: number | undefined }
  | { kind: 'oneHot'; field: string; index: ReadonlyMap<string, number>; width: number };

interface InputLayout {
  input: string;
  width: number;
  columns: Column[];
}

interface OutputLayout {
  output: string;
  labels: readonly string[];
  width: number;
}

/** What an Avro field holds, seen through a ["null", T] union. */
interface FieldKind {
  base: 'number' | 'boolean' | 'string' | 'enum' | 'other';
  nullable: boolean;
  symbols?: readonly string[];
}

function fieldKind(type: avro.Type): FieldKind {
  let nullable = false;
  let inner = type;
  if (avro.Type.isType(type, 'union')) {
    const branches = (type as unknown as { types: avro.Type[] }).types;
    const others = branches.filter((t) => t.typeName !== 'null');
    nullable = others.length < branches.length;
    if (others.length !== 1) return { base: 'other', nullable };
    inner = others[0]!;
  }
  const name = inner.typeName;
  if (['int', 'long', 'float', 'double'].includes(name)) return { base: 'number', nullable };
  if (name === 'boolean') return { base: 'boolean', nullable };
  if (name === 'string') return { base: 'string', nullable };
  if (name === 'enum') {
    return { base: 'enum', nullable, symbols: (inner as avro.types.EnumType).symbols };
  }
  return { base: 'other', nullable };
}

const TIMESTAMP_MILLIS = { type: 'long', logicalType: 'timestamp-millis' } as const;

/** The mapping of one request topic. */
export class FieldMapping {
  readonly topic: string;
  readonly idField: string;
  readonly model: string | null;
  readonly requestType: avro.Type;
  readonly resultType: avro.Type;
  readonly resultSchema: avro.Schema;
  private readonly config: FieldMappingConfig;
  private readonly key: string;
  private readonly fields: Map<string, FieldKind>;
  private readonly layouts = new WeakMap<ModelInfo, InputLayout | StreamscoreError>();
  private readonly outputs = new WeakMap<ModelInfo, OutputLayout>();

  /** `key` names the entry in errors, e.g. `mappings.byTopic[0]`. */
  constructor(config: FieldMappingConfig, requestSchema: avro.Schema, key: string) {
    this.config = config;
    this.key = key;
    this.topic = config.topic;
    this.idField = config.id;
    this.model = config.model ?? null;
    try {
      this.requestType = avro.Type.forSchema(requestSchema, { wrapUnions: 'auto' });
    } catch (err) {
      throw this.invalid(
        'schema',
        `${config.schema} is not a valid Avro schema: ${(err as Error).message}`,
      );
    }
    if (!avro.Type.isType(this.requestType, 'record')) {
      throw this.invalid('schema', `${config.schema} must be an Avro record schema`);
    }
    const recordFields = (this.requestType as avro.types.RecordType).fields;
    this.fields = new Map(recordFields.map((f) => [f.name, fieldKind(f.type)]));

    const id = this.fields.get(this.idField);
    if (!id || !['string', 'number'].includes(id.base) || id.nullable) {
      throw this.invalid(
        'id',
        id
          ? `field "${this.idField}" must be a non-null string or number to serve as the request id`
          : `the request schema has no field "${this.idField}" (fields: ${[...this.fields.keys()].join(', ')})`,
      );
    }
    this.resultSchema = this.buildResultSchema(recordFields);
    this.resultType = avro.Type.forSchema(this.resultSchema, { wrapUnions: 'auto' });
  }

  /** Where this topic's results go: result.topic, else the worker's topics.results. */
  resultTopicOr(fallback: string): string {
    return this.config.result.topic ?? fallback;
  }

  /**
   * Compiles the mapping for a model version; throws CONFIG_INVALID naming the field when it does
   * not fit. Cached per version, so this is cheap after the first call.
   */
  check(info: ModelInfo): void {
    const layout = this.inputLayout(info);
    if (layout instanceof StreamscoreError) throw layout;
    this.outputLayout(info);
  }

  /** A domain record (as avsc read it) → a request whose inputs are made once its model is known. */
  toRequest(record: Record<string, unknown>): InferenceRequest {
    const id = record[this.idField];
    return {
      id: String(id),
      model: this.model,
      modelVersion: null,
      requestedAt: null,
      inputs: [],
      fields: record,
      mapping: this,
    };
  }

  /** The model input of a mapped request, with the constants of the version that scores it. */
  inputsFor(request: InferenceRequest, info: ModelInfo): NamedTensor[] {
    const layout = this.inputLayout(info);
    if (layout instanceof StreamscoreError) {
      // A version swapped in later that this mapping cannot feed: ours, not the record's fault.
      throw new StreamscoreError('MODEL_INVALID', layout.message, { details: layout.details });
    }
    const fields = request.fields ?? {};
    const data = new Float32Array(layout.width);
    let at = 0;
    for (const column of layout.columns) {
      const value = fields[column.field];
      if (column.kind === 'oneHot') {
        const index =
          value === null || value === undefined ? undefined : column.index.get(String(value));
        if (index !== undefined) data[at + index] = 1;
        at += column.width;
        continue;
      }
      let x: number;
      if (value === null || value === undefined) {
        if (column.ifNull === undefined) {
          throw new StreamscoreError(
            'MAPPING_FAILED',
            `field "${column.field}" is null and the mapping gives no ifNull`,
            { details: { field: column.field } },
          );
        }
        x = column.ifNull;
      } else x = typeof value === 'boolean' ? (value ? 1 : 0) : Number(value);
      if (!Number.isFinite(x)) {
        throw new StreamscoreError('NON_FINITE', `field "${column.field}" is ${String(value)}`, {
          details: { field: column.field },
        });
      }
      data[at++] = (x - column.mean) / column.std;
    }
    return [{ name: layout.input, shape: [layout.width], data }];
  }

  /** The result record of a mapped request. */
  toResult(
    result: InferenceResult,
    request: InferenceRequest,
    info: ModelInfo,
  ): Record<string, unknown> {
    const { output, labels } = this.outputLayout(info);
    const scores = result.outputs.find((t) => t.name === output)?.data;
    if (!scores) {
      throw new StreamscoreError('ENCODE_FAILED', `model output "${output}" is missing`);
    }
    const top = argmax(scores);
    const out: Record<string, unknown> = {
      [this.idField]: request.fields?.[this.idField] ?? request.id,
    };
    for (const name of this.config.result.copy) out[name] = request.fields?.[name] ?? null;
    for (const field of this.config.result.fields) {
      out[field.name] = outputValue(field, scores, labels, top);
    }
    out['model'] = result.model;
    out['modelVersion'] = result.modelVersion;
    out['inferredAt'] = result.inferredAt;
    return out;
  }

  private inputLayout(info: ModelInfo): InputLayout | StreamscoreError {
    let layout = this.layouts.get(info);
    if (layout === undefined) {
      try {
        layout = this.compileInputs(info);
      } catch (err) {
        if (!(err instanceof StreamscoreError)) throw err;
        layout = err;
      }
      this.layouts.set(info, layout);
    }
    return layout;
  }

  private compileInputs(info: ModelInfo): InputLayout {
    const model = `${info.name}@${info.version}`;
    const inputName = this.config.input ?? (info.inputs.length === 1 ? info.inputs[0]!.name : null);
    if (inputName === null) {
      throw this.invalid(
        'input',
        `model ${model} has ${info.inputs.length} inputs (${info.inputs.map((i) => i.name).join(', ')}); say which one the fields feed`,
      );
    }
    const spec = info.inputs.find((i) => i.name === inputName);
    if (!spec || spec.shape.length !== 1 || typeof spec.shape[0] !== 'number') {
      throw this.invalid(
        'input',
        spec
          ? `input "${inputName}" of model ${model} has shape [${spec.shape.join(', ')}]; a mapping feeds a flat vector [n]`
          : `model ${model} has no input "${inputName}"`,
      );
    }
    const features = info.features;
    const entries: InputMappingConfig[] =
      this.config.inputs ?? features?.map((f) => ({ field: f.name })) ?? [];
    if (entries.length === 0) {
      throw this.invalid(
        'inputs',
        `model ${model}'s card lists no features; list the input fields`,
      );
    }
    const columns = entries.map((entry, i) => this.column(entry, i, features, model));
    if (features && this.config.inputs) {
      // The card's column groups are the order training used; any other order feeds garbage.
      const expected = features.map((f) => f.name);
      const given = entries.map((e) => e.feature ?? e.field);
      const at = expected.findIndex((name, i) => given[i] !== name);
      if (at >= 0 || given.length !== expected.length) {
        const i = at >= 0 ? at : Math.min(given.length, expected.length);
        throw this.invalid(
          `inputs[${i}]`,
          `model ${model}'s card lays its input out as [${expected.join(', ')}], the mapping as [${given.join(', ')}]; list the fields in the card's order (or leave inputs out to use it)`,
        );
      }
    }
    const width = columns.reduce((sum, c) => sum + (c.kind === 'oneHot' ? c.width : 1), 0);
    if (width !== spec.shape[0]) {
      throw this.invalid(
        'inputs',
        `the fields make ${width} columns, model ${model}'s input "${inputName}" takes ${spec.shape[0]}`,
      );
    }
    return { input: inputName, width, columns };
  }

  private column(
    entry: InputMappingConfig,
    i: number,
    features: readonly FeatureCard[] | undefined,
    model: string,
  ): Column {
    const at = `inputs[${i}]`;
    const kind = this.fields.get(entry.field);
    if (!kind) {
      throw this.invalid(
        `${at}.field`,
        `the request schema has no field "${entry.field}" (fields: ${[...this.fields.keys()].join(', ')})`,
      );
    }
    const featureName = entry.feature ?? entry.field;
    const card = features?.find((f) => f.name === featureName);
    if (entry.feature !== undefined && !card) {
      throw this.invalid(`${at}.feature`, `model ${model}'s card has no feature "${featureName}"`);
    }
    const oneHot =
      entry.vocabulary !== undefined ||
      (entry.mean === undefined && entry.std === undefined && card?.kind === 'oneHot');
    if (oneHot) {
      if (kind.base !== 'string' && kind.base !== 'enum') {
        throw this.invalid(
          `${at}.field`,
          `field "${entry.field}" is not a string or enum, so it cannot be one-hot encoded`,
        );
      }
      const vocabulary = entry.vocabulary ?? (card?.kind === 'oneHot' ? card.vocabulary : []);
      return {
        kind: 'oneHot',
        field: entry.field,
        index: new Map(vocabulary.map((word, j) => [word, j])),
        width: vocabulary.length,
      };
    }
    if (kind.base !== 'number' && kind.base !== 'boolean') {
      throw this.invalid(
        `${at}.field`,
        `field "${entry.field}" is ${kind.base === 'other' ? 'not a number' : `a ${kind.base}`}; give a vocabulary to one-hot encode it`,
      );
    }
    if (kind.nullable && entry.ifNull === undefined) {
      throw this.invalid(
        `${at}.ifNull`,
        `field "${entry.field}" may be null; say what number stands for null`,
      );
    }
    const mean = entry.mean ?? (card?.kind === 'numeric' ? card.mean : 0);
    const std = entry.std ?? (card?.kind === 'numeric' ? card.std : 1);
    return { kind: 'numeric', field: entry.field, mean, std, ifNull: entry.ifNull };
  }

  private outputLayout(info: ModelInfo): OutputLayout {
    const cached = this.outputs.get(info);
    if (cached) return cached;
    const model = `${info.name}@${info.version}`;
    const output = this.config.output ?? info.outputs[0]!.name;
    const spec = info.outputs.find((o) => o.name === output);
    if (!spec || spec.shape.length !== 1 || typeof spec.shape[0] !== 'number') {
      throw this.invalid(
        'output',
        spec
          ? `output "${output}" of model ${model} is not a flat vector of scores`
          : `model ${model} has no output "${output}"`,
      );
    }
    const width = spec.shape[0];
    const labels = info.labels ?? [];
    this.config.result.fields.forEach((field, i) => {
      const at = `result.fields[${i}]`;
      const needsLabels = field.kind !== 'score' || 'label' in field;
      if (needsLabels && labels.length !== width) {
        throw this.invalid(
          at,
          `"${field.kind}" needs the model's labels; model ${model}'s card lists ${labels.length} for ${width} scores`,
        );
      }
      if ('label' in field && field.label !== undefined && !labels.includes(field.label)) {
        throw this.invalid(
          `${at}.label`,
          `model ${model} has no label "${field.label}" (labels: ${labels.join(', ')})`,
        );
      }
      if (field.kind === 'topK' && field.k > width) {
        throw this.invalid(`${at}.k`, `k is ${field.k}, model ${model} has ${width} scores`);
      }
    });
    const layout = { output, labels, width };
    this.outputs.set(info, layout);
    return layout;
  }

  private buildResultSchema(requestFields: readonly avro.types.Field[]): avro.Schema {
    const request = this.requestType as avro.types.RecordType;
    const fullName = request.name ?? 'Request';
    const dot = fullName.lastIndexOf('.');
    const namespace = dot > 0 ? fullName.slice(0, dot) : undefined;
    const shortName = fullName.slice(dot + 1);
    const name = this.config.result.name ?? `${shortName}Score`;
    const fields: { name: string; type: unknown; doc?: string }[] = [
      {
        name: this.idField,
        type: requestFields.find((f) => f.name === this.idField)!.type.schema(),
        doc: 'The request id.',
      },
    ];
    this.config.result.copy.forEach((copy, i) => {
      const field = requestFields.find((f) => f.name === copy);
      if (!field)
        throw this.invalid(`result.copy[${i}]`, `the request schema has no field "${copy}"`);
      let type = field.type.schema() as unknown;
      // Copied as it came; nullable so a request without it (after schema evolution) still answers.
      if (!avro.Type.isType(field.type, 'union')) type = ['null', type];
      fields.push({ name: copy, type, doc: `Copied from the request's ${copy}.` });
    });
    this.config.result.fields.forEach((field) => fields.push(outputField(field, namespace)));
    fields.push(
      { name: 'model', type: 'string', doc: 'Model that scored the request.' },
      { name: 'modelVersion', type: 'string', doc: 'Version of that model.' },
      { name: 'inferredAt', type: TIMESTAMP_MILLIS, doc: 'When the model returned the batch.' },
    );
    const names = fields.map((f) => f.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined) {
      throw this.invalid(
        'result',
        `the result record would have the field "${twice}" twice (id, copy, fields, model, modelVersion and inferredAt share one record)`,
      );
    }
    return {
      type: 'record',
      name,
      ...(namespace ? { namespace } : {}),
      doc: `streamscore result for ${fullName} requests on ${this.topic}.`,
      fields,
    } as avro.Schema;
  }

  private invalid(path: string, message: string): StreamscoreError {
    const key = `${this.key}.${path}`;
    return new StreamscoreError('CONFIG_INVALID', `${key} (topic ${this.topic}): ${message}`, {
      details: { key },
    });
  }
}

function outputField(
  field: OutputMappingConfig,
  namespace: string | undefined,
): { name: string; type: unknown; doc: string } {
  switch (field.kind) {
    case 'label':
      return { name: field.name, type: 'string', doc: 'The top label (argmax).' };
    case 'score':
      return {
        name: field.name,
        type: 'float',
        doc: field.label ? `Score of the label "${field.label}".` : 'Score of the top label.',
      };
    case 'topK':
      return {
        name: field.name,
        type: {
          type: 'array',
          items: {
            type: 'record',
            name: `${field.name[0]!.toUpperCase()}${field.name.slice(1)}Entry`,
            ...(namespace ? { namespace } : {}),
            fields: [
              { name: 'label', type: 'string' },
              { name: 'score', type: 'float' },
            ],
          },
        },
        doc: `The ${field.k} best labels with their scores, best first.`,
      };
    case 'threshold':
      return {
        name: field.name,
        type: 'boolean',
        doc: `Whether the score of "${field.label}" is at least ${field.threshold}.`,
      };
    case 'scores':
      return {
        name: field.name,
        type: { type: 'map', values: 'float' },
        doc: 'Every label with its score.',
      };
  }
}

function outputValue(
  field: OutputMappingConfig,
  scores: Float32Array,
  labels: readonly string[],
  top: number,
): unknown {
  switch (field.kind) {
    case 'label':
      return labels[top];
    case 'score':
      return field.label === undefined ? scores[top] : scores[labels.indexOf(field.label)];
    case 'topK':
      return [...scores.keys()]
        .sort((a, b) => scores[b]! - scores[a]!)
        .slice(0, field.k)
        .map((i) => ({ label: labels[i], score: scores[i] }));
    case 'threshold':
      return scores[labels.indexOf(field.label)]! >= field.threshold;
    case 'scores':
      return Object.fromEntries(labels.map((label, i) => [label, scores[i]]));
  }
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
