/**
 * Files of records for the batch commands (`streamscore score`, `streamscore produce`): read
 * JSON lines, CSV with a header row, or Avro object container files as values of a request type,
 * and write JSON lines.
 *
 * Every value is converted to what the avsc type accepts (a number array for `array<float>`, the
 * right branch of a union, a field's default), and a value that does not fit is reported with the
 * file, line (or row, or record) and the field path, e.g. `requests.csv:12: field "amount":
 * expected a number (double), got "12,5"`.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { open, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import avro from 'avsc';
import { parse as parseCsv } from 'csv-parse';

export type RecordFileFormat = 'jsonl' | 'csv' | 'avro';

/** A record file that cannot be read, or a value in it that does not fit the request type. */
export class RecordFileError extends Error {
  constructor(
    message: string,
    readonly file: string,
    /** 1-based line (JSON lines, CSV) or record number (Avro); undefined for the whole file. */
    readonly line?: number,
    /** Path of the field that does not fit, e.g. `inputs[0].data[3]`. */
    readonly field?: string,
  ) {
    super(message);
    this.name = 'RecordFileError';
  }
}

/** A value that does not fit a type: where (`inputs[0].shape`) and why. */
export class ValueError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(field === '' ? reason : `field "${field}": ${reason}`);
    this.name = 'ValueError';
  }
}

export interface FileRecord {
  /** 0-based position among the file's records. */
  index: number;
  /** The record as the request type accepts it. */
  record: Record<string, unknown>;
  /** 1-based line (row, record number for Avro) where it starts, for messages. */
  line: number;
}

export interface ReadRecordsOptions {
  /** The request type (a record type): every record is converted to fit it. */
  type: avro.Type;
  /**
   * Top-level fields that may be missing although the type requires them (the id field, which
   * the caller fills in). They are left out of the record.
   */
  optionalFields?: readonly string[];
  /** Records before this index are read past without conversion (resuming). Default 0. */
  skip?: number;
}

const EXTENSIONS: Record<string, RecordFileFormat> = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.csv': 'csv',
  '.avro': 'avro',
};

export function recordFileFormat(file: string): RecordFileFormat {
  const format = EXTENSIONS[path.extname(file).toLowerCase()];
  if (format === undefined) {
    throw new RecordFileError(
      `${file}: unknown file type "${path.extname(file)}" (expected .jsonl, .ndjson, .csv or .avro)`,
      file,
    );
  }
  return format;
}

// --- JSON values → avsc values -------------------------------------------------------------------

const describe = (value: unknown): string => {
  if (value === undefined) return 'nothing';
  if (Buffer.isBuffer(value)) return `${value.length} bytes`;
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 39)}…` : text;
};

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);

const INT_MIN = -(2 ** 31);
const INT_MAX = 2 ** 31 - 1;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function bytesOf(value: unknown, field: string): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.length);
  if (typeof value === 'string' && value.length % 4 === 0 && BASE64.test(value)) {
    return Buffer.from(value, 'base64');
  }
  throw new ValueError(field, `expected base64 text (bytes), got ${describe(value)}`);
}

const join = (field: string, name: string) => (field === '' ? name : `${field}.${name}`);

/** The branches of a union type, null first if there is one. */
function unionBranches(type: avro.Type): avro.Type[] {
  return (type as unknown as { types: avro.Type[] }).types;
}

function nullable(type: avro.Type): boolean {
  return (
    type.typeName.startsWith('union') && unionBranches(type).some((t) => t.typeName === 'null')
  );
}

/**
 * `value` (parsed JSON, or a value decoded from another Avro schema) as a value of `type`. Throws
 * ValueError naming the field path below `field` that does not fit.
 */
export function toAvroValue(type: avro.Type, value: unknown, field = ''): unknown {
  switch (type.typeName) {
    case 'null':
      if (value === null || value === undefined) return null;
      throw new ValueError(field, `expected null, got ${describe(value)}`);
    case 'boolean':
      if (typeof value === 'boolean') return value;
      throw new ValueError(field, `expected true or false, got ${describe(value)}`);
    case 'int':
      if (Number.isInteger(value) && (value as number) >= INT_MIN && (value as number) <= INT_MAX) {
        return value;
      }
      throw new ValueError(field, `expected a whole number (int), got ${describe(value)}`);
    case 'long':
      if (Number.isSafeInteger(value)) return value;
      if (typeof value === 'bigint' && Number.isSafeInteger(Number(value))) return Number(value);
      throw new ValueError(field, `expected a whole number (long), got ${describe(value)}`);
    case 'float':
    case 'double':
      if (typeof value === 'number') return value;
      throw new ValueError(field, `expected a number (${type.typeName}), got ${describe(value)}`);
    case 'string':
      if (typeof value === 'string') return value;
      throw new ValueError(field, `expected text (string), got ${describe(value)}`);
    case 'bytes':
      return bytesOf(value, field);
    case 'fixed': {
      const size = (type as unknown as { size: number }).size;
      const bytes = bytesOf(value, field);
      if (bytes.length === size) return bytes;
      throw new ValueError(field, `expected ${size} bytes (fixed), got ${bytes.length}`);
    }
    case 'enum': {
      const symbols = (type as unknown as { symbols: string[] }).symbols;
      if (typeof value === 'string' && symbols.includes(value)) return value;
      throw new ValueError(field, `expected one of ${symbols.join(', ')}, got ${describe(value)}`);
    }
    case 'array': {
      if (!Array.isArray(value) && !ArrayBuffer.isView(value)) {
        throw new ValueError(field, `expected an array, got ${describe(value)}`);
      }
      const items = (type as unknown as { itemsType: avro.Type }).itemsType;
      return Array.from(value as ArrayLike<unknown>, (item, i) =>
        toAvroValue(items, item, `${field}[${i}]`),
      );
    }
    case 'map': {
      if (!isPlainObject(value)) {
        throw new ValueError(field, `expected an object (map), got ${describe(value)}`);
      }
      const values = (type as unknown as { valuesType: avro.Type }).valuesType;
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value)) {
        out[key] = toAvroValue(values, item, join(field, key));
      }
      return out;
    }
    case 'record':
    case 'error':
      if (!isPlainObject(value)) {
        throw new ValueError(
          field,
          `expected an object (${type.name ?? 'record'}), got ${describe(value)}`,
        );
      }
      return recordValue(type, value, field, []);
    case 'union:unwrapped':
    case 'union:wrapped':
      return unionValue(type, value, field);
    default:
      return otherValue(type, value, field);
  }
}

function recordValue(
  type: avro.Type,
  value: Record<string, unknown>,
  field: string,
  optional: readonly string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of (type as avro.types.RecordType).fields) {
    const given = value[f.name];
    const name = join(field, f.name);
    if (given === undefined) {
      if (optional.includes(f.name)) continue;
      const fallback: unknown = f.defaultValue();
      if (fallback !== undefined) out[f.name] = fallback;
      else if (nullable(f.type)) out[f.name] = toAvroValue(f.type, null, name);
      else throw new ValueError(name, 'missing (the field has no default)');
      continue;
    }
    out[f.name] = toAvroValue(f.type, given, name);
  }
  return out;
}

function unionValue(type: avro.Type, value: unknown, field: string): unknown {
  const branches = unionBranches(type);
  const wrapped = type.typeName === 'union:wrapped';
  const wrap = (branch: avro.Type, v: unknown) =>
    wrapped && v !== null ? { [branch.branchName!]: v } : v;
  if (value === null || value === undefined) {
    if (branches.some((b) => b.typeName === 'null')) return null;
    throw new ValueError(field, `expected a value (not nullable), got ${describe(value)}`);
  }
  for (const branch of branches) {
    if (branch.typeName === 'null') continue;
    try {
      return wrap(branch, toAvroValue(branch, value, field));
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
    }
  }
  // Avro's JSON encoding of a union: {"<branch name>": value}.
  if (isPlainObject(value)) {
    const keys = Object.keys(value);
    const branch = keys.length === 1 ? branches.find((b) => b.branchName === keys[0]) : undefined;
    if (branch !== undefined) return wrap(branch, toAvroValue(branch, value[keys[0]!], field));
  }
  const names = branches.map((b) => b.branchName ?? b.typeName).join(' | ');
  throw new ValueError(field, `expected ${names}, got ${describe(value)}`);
}

/** Logical types and anything else: built through the underlying type when not valid as is. */
function otherValue(type: avro.Type, value: unknown, field: string): unknown {
  if (type.isValid(value)) return value;
  const underlying = (type as unknown as { underlyingType?: avro.Type }).underlyingType;
  if (underlying !== undefined) {
    // Encoding with the underlying type and decoding with the logical one builds its value.
    return type.fromBuffer(underlying.toBuffer(toAvroValue(underlying, value, field)));
  }
  throw new ValueError(field, `does not fit ${type.typeName}: ${describe(value)}`);
}

// --- CSV cells → avsc values ---------------------------------------------------------------------

const TRUE = new Set(['true', '1', 'yes', 'y', 't']);
const FALSE = new Set(['false', '0', 'no', 'n', 'f']);

/** One CSV cell as a value of `type`. Complex types (arrays, maps, records) are JSON text. */
export function fromCell(type: avro.Type, text: string, field: string): unknown {
  const trimmed = text.trim();
  switch (type.typeName) {
    case 'null':
      if (trimmed === '') return null;
      throw new ValueError(field, `expected an empty cell (null), got ${describe(text)}`);
    case 'string':
      return text;
    case 'boolean': {
      const lower = trimmed.toLowerCase();
      if (TRUE.has(lower)) return true;
      if (FALSE.has(lower)) return false;
      throw new ValueError(field, `expected true or false, got ${describe(text)}`);
    }
    case 'int':
    case 'long':
    case 'float':
    case 'double': {
      const number = trimmed === '' ? NaN : Number(trimmed);
      if (Number.isNaN(number)) {
        throw new ValueError(field, `expected a number (${type.typeName}), got ${describe(text)}`);
      }
      return toAvroValue(type, number, field);
    }
    case 'enum':
      return toAvroValue(type, trimmed, field);
    case 'bytes':
    case 'fixed':
      return toAvroValue(type, trimmed, field);
    case 'union:unwrapped':
    case 'union:wrapped': {
      const branches = unionBranches(type);
      if (trimmed === '' && branches.some((b) => b.typeName === 'null')) return null;
      for (const branch of branches) {
        if (branch.typeName === 'null') continue;
        try {
          const value = fromCell(branch, text, field);
          return type.typeName === 'union:wrapped' ? { [branch.branchName!]: value } : value;
        } catch (err) {
          if (!(err instanceof ValueError)) throw err;
        }
      }
      const names = branches.map((b) => b.branchName ?? b.typeName).join(' | ');
      throw new ValueError(field, `expected ${names}, got ${describe(text)}`);
    }
    default: {
      let json: unknown;
      try {
        json = JSON.parse(trimmed);
      } catch {
        throw new ValueError(field, `expected JSON (${type.typeName}), got ${describe(text)}`);
      }
      return toAvroValue(type, json, field);
    }
  }
}

function recordFromCells(
  type: avro.Type,
  cells: Record<string, string>,
  optional: readonly string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of (type as avro.types.RecordType).fields) {
    const text = cells[f.name];
    const fallback: unknown = f.defaultValue();
    // An empty cell is null for a nullable field, else the default, else "" for text.
    const empty = text === undefined || text === '';
    if (empty && nullable(f.type)) out[f.name] = toAvroValue(f.type, null, f.name);
    else if (empty && fallback !== undefined) out[f.name] = fallback;
    else if (text === undefined) {
      if (optional.includes(f.name)) continue;
      throw new ValueError(f.name, 'missing: no such column (the field has no default)');
    } else if (empty && optional.includes(f.name)) continue;
    else out[f.name] = fromCell(f.type, text, f.name);
  }
  return out;
}

// --- readers -------------------------------------------------------------------------------------

function atLine(file: string, line: number, err: unknown): Error {
  const where = `${path.basename(file)}:${line}`;
  if (err instanceof ValueError)
    return new RecordFileError(`${where}: ${err.message}`, file, line, err.field);
  return new RecordFileError(`${where}: ${(err as Error).message}`, file, line);
}

async function* readJsonLines(file: string, opts: ReadRecordsOptions): AsyncGenerator<FileRecord> {
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  const skip = opts.skip ?? 0;
  const optional = opts.optionalFields ?? [];
  let lineNumber = 0;
  let index = 0;
  try {
    for await (const text of lines) {
      lineNumber++;
      if (text.trim() === '') continue;
      if (index < skip) {
        index++;
        continue;
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw atLine(file, lineNumber, new Error(`not JSON: ${(err as Error).message}`));
      }
      if (!isPlainObject(json)) {
        throw atLine(
          file,
          lineNumber,
          new ValueError('', `expected a JSON object, got ${describe(json)}`),
        );
      }
      let record: Record<string, unknown>;
      try {
        record = recordValue(opts.type, json, '', optional);
      } catch (err) {
        throw atLine(file, lineNumber, err);
      }
      yield { index, record, line: lineNumber };
      index++;
    }
  } finally {
    lines.close();
  }
}

async function* readCsv(file: string, opts: ReadRecordsOptions): AsyncGenerator<FileRecord> {
  const fields = new Set((opts.type as avro.types.RecordType).fields.map((f) => f.name));
  const skip = opts.skip ?? 0;
  const optional = opts.optionalFields ?? [];
  const parser = createReadStream(file).pipe(
    parseCsv({
      bom: true,
      info: true,
      skip_empty_lines: true,
      columns: (header: string[]) => {
        const names = header.map((h) => h.trim());
        const duplicate = names.find((n, i) => names.indexOf(n) !== i);
        if (duplicate !== undefined) {
          throw new RecordFileError(
            `${path.basename(file)}:1: column "${duplicate}" appears twice`,
            file,
            1,
          );
        }
        // Columns that are not fields (labels, notes) are read past, as JSON lines' extra keys.
        return names.map((n) => (fields.has(n) ? n : false));
      },
    }),
  );
  let index = 0;
  try {
    for await (const row of parser as AsyncIterable<{
      record: Record<string, string>;
      info: { lines: number };
    }>) {
      if (index < skip) {
        index++;
        continue;
      }
      let record: Record<string, unknown>;
      try {
        record = recordFromCells(opts.type, row.record, optional);
      } catch (err) {
        throw atLine(file, row.info.lines, err);
      }
      yield { index, record, line: row.info.lines };
      index++;
    }
  } catch (err) {
    if (err instanceof RecordFileError) throw err;
    const line = (err as { lines?: number }).lines;
    throw new RecordFileError(
      `${path.basename(file)}${line === undefined ? '' : `:${line}`}: ${(err as Error).message}`,
      file,
      line,
    );
  } finally {
    parser.destroy();
  }
}

async function* readAvro(file: string, opts: ReadRecordsOptions): AsyncGenerator<FileRecord> {
  const decoder = avro.createFileDecoder(file);
  const skip = opts.skip ?? 0;
  const optional = opts.optionalFields ?? [];
  let index = 0;
  try {
    for await (const value of decoder as AsyncIterable<unknown>) {
      if (index >= skip) {
        let record: Record<string, unknown>;
        try {
          if (!isPlainObject(value))
            throw new ValueError('', `expected a record, got ${describe(value)}`);
          record = recordValue(opts.type, value, '', optional);
        } catch (err) {
          throw atLine(file, index + 1, err);
        }
        yield { index, record, line: index + 1 };
      }
      index++;
    }
  } catch (err) {
    if (err instanceof RecordFileError) throw err;
    throw new RecordFileError(
      `${path.basename(file)}: not a readable Avro file: ${(err as Error).message}`,
      file,
    );
  } finally {
    decoder.destroy();
  }
}

/**
 * The file's records, in file order, each converted to `opts.type`. The format comes from the
 * extension. Throws RecordFileError at the first record that does not fit, naming its line.
 */
export function readRecords(file: string, opts: ReadRecordsOptions): AsyncGenerator<FileRecord> {
  switch (recordFileFormat(file)) {
    case 'jsonl':
      return readJsonLines(file, opts);
    case 'csv':
      return readCsv(file, opts);
    case 'avro':
      return readAvro(file, opts);
  }
}

/** How many records the file holds (a pass over it without conversion), for progress and ETA. */
export async function countRecords(file: string): Promise<number> {
  let count = 0;
  switch (recordFileFormat(file)) {
    case 'jsonl': {
      const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
      for await (const text of lines) if (text.trim() !== '') count++;
      return count;
    }
    case 'csv': {
      const parser = createReadStream(file).pipe(parseCsv({ bom: true, skip_empty_lines: true }));
      for await (const _row of parser as AsyncIterable<unknown>) count++;
      return Math.max(0, count - 1); // the header row
    }
    case 'avro': {
      const decoder = avro.createFileDecoder(file);
      try {
        for await (const _value of decoder as AsyncIterable<unknown>) count++;
      } catch (err) {
        throw new RecordFileError(
          `${path.basename(file)}: not a readable Avro file: ${(err as Error).message}`,
          file,
        );
      }
      return count;
    }
  }
}

// --- output --------------------------------------------------------------------------------------

/**
 * A value as JSON text: bytes as base64, 64-bit integers beyond 2^53 as decimal text, typed arrays
 * as arrays.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, key, v: unknown) {
    const raw = key === '' ? value : this[key];
    if (Buffer.isBuffer(raw)) return raw.toString('base64');
    if (typeof raw === 'bigint')
      return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw.toString();
    if (ArrayBuffer.isView(raw) && !(raw instanceof DataView))
      return Array.from(raw as unknown as ArrayLike<number>);
    return v;
  });
}

/**
 * Complete lines (ending in "\n") at the start of `file`, after cutting off a partial last line
 * (what a killed writer can leave); 0 when the file does not exist.
 */
export async function completeLines(file: string): Promise<number> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let lines = 0;
  let end = 0; // byte offset just after the last newline
  let offset = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    let at = chunk.indexOf(10);
    while (at !== -1) {
      lines++;
      end = offset + at + 1;
      at = chunk.indexOf(10, at + 1);
    }
    offset += chunk.length;
  }
  if (end < size) await truncate(file, end);
  return lines;
}

/** Appends lines to a file, waiting when the stream's buffer is full. */
export class LineWriter {
  private closing: Promise<void> | null = null;

  private constructor(private readonly handle: WriteStream) {}

  /** Opens `file` for appending (created if missing). */
  static async open(file: string): Promise<LineWriter> {
    // Fail here, with the path, rather than on the first write.
    const probe = await open(file, 'a');
    await probe.close();
    return new LineWriter(createWriteStream(file, { flags: 'a' }));
  }

  async write(text: string): Promise<void> {
    if (!this.handle.write(text.endsWith('\n') ? text : `${text}\n`))
      await once(this.handle, 'drain');
  }

  /** Flushes and closes; later calls return the same promise. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve, reject) => {
      this.handle.once('error', reject);
      this.handle.end(() => resolve());
    });
    return this.closing;
  }
}
