import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import avro from 'avsc';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadSchemas } from '../../src/codec/avro.js';
import {
  completeLines,
  jsonLine,
  LineWriter,
  readRecords,
  RecordFileError,
  toAvroValue,
  type FileRecord,
} from '../../src/cli/record-files.js';

const { request } = loadSchemas();
const payment = avro.Type.forSchema(
  JSON.parse(
    await readFile(new URL('../../schemas/examples/payment.avsc', import.meta.url), 'utf8'),
  ) as avro.Schema,
);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'record-files-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function all(iterable: AsyncIterable<FileRecord>): Promise<FileRecord[]> {
  const out: FileRecord[] = [];
  for await (const r of iterable) out.push(r);
  return out;
}

async function fileWith(name: string, text: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

/** An Avro object container file of `rows`, written completely before this resolves. */
async function avroFile(name: string, type: avro.Type, rows: object[]): Promise<string> {
  const file = path.join(dir, name);
  const encoder = new avro.streams.BlockEncoder(type);
  const out = createWriteStream(file);
  encoder.pipe(out);
  for (const row of rows) encoder.write(row);
  encoder.end();
  await once(out, 'finish');
  return file;
}

async function failure(promise: Promise<unknown>): Promise<RecordFileError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RecordFileError);
  return err as RecordFileError;
}

describe('JSON lines', () => {
  it('reads InferenceRequests: number arrays, defaults for missing nullable fields', async () => {
    const file = await fileWith(
      'requests.jsonl',
      [
        JSON.stringify({ id: 'a', inputs: [{ name: 'pixels', shape: [2], data: [0.5, 1] }] }),
        '',
        JSON.stringify({
          id: 'b',
          model: 'digits',
          inputs: [{ name: 'pixels', shape: [1], data: [3] }],
          extra: 'ignored',
        }),
      ].join('\n'),
    );
    const records = await all(readRecords(file, { type: request }));
    expect(records.map((r) => [r.index, r.line])).toEqual([
      [0, 1],
      [1, 3],
    ]);
    expect(records[0]!.record).toEqual({
      id: 'a',
      model: null,
      modelVersion: null,
      requestedAt: null,
      inputs: [{ name: 'pixels', shape: [2], data: [0.5, 1] }],
    });
    expect(records[1]!.record['model']).toBe('digits');
    for (const r of records) expect(request.isValid(r.record)).toBe(true);
  });

  it('names the line and the field that does not fit', async () => {
    const file = await fileWith(
      'bad.jsonl',
      `${JSON.stringify({ id: 'a', inputs: [] })}\n${JSON.stringify({
        id: 'b',
        inputs: [{ name: 'pixels', shape: [2], data: [0.5, 'x'] }],
      })}\n`,
    );
    const err = await failure(all(readRecords(file, { type: request })));
    expect(err.line).toBe(2);
    expect(err.field).toBe('inputs[0].data');
    expect(err.message).toMatch(
      /^bad\.jsonl:2: field "inputs\[0\]\.data": expected bytes \| array/,
    );
  });

  it('reports a missing required field, unless the caller fills it in', async () => {
    const file = await fileWith('noid.jsonl', JSON.stringify({ inputs: [] }) + '\n');
    const err = await failure(all(readRecords(file, { type: request })));
    expect(err.message).toBe('noid.jsonl:1: field "id": missing (the field has no default)');
    const [record] = await all(readRecords(file, { type: request, optionalFields: ['id'] }));
    expect(record!.record).not.toHaveProperty('id');
  });

  it('reports text that is not JSON with its line', async () => {
    const file = await fileWith('garbage.jsonl', '{"id":"a","inputs":[]}\n{"id": \n');
    const err = await failure(all(readRecords(file, { type: request })));
    expect(err.message).toMatch(/^garbage\.jsonl:2: not JSON/);
  });

  it('skips the first records without reading them as values', async () => {
    const lines = ['not even json', '{"id":"b","inputs":[]}', '{"id":"c","inputs":[]}'];
    const file = await fileWith('skip.ndjson', lines.join('\n'));
    const records = await all(readRecords(file, { type: request, skip: 1 }));
    expect(records.map((r) => [r.index, r.record['id']])).toEqual([
      [1, 'b'],
      [2, 'c'],
    ]);
  });
});

describe('CSV', () => {
  it('converts cells to the field types: numbers, booleans, enums, nullable empty cells', async () => {
    const file = await fileWith(
      'payments.csv',
      [
        'paymentId,amount,merchantCategory,country,hourOfDay,cardPresent,accountAgeDays,channel,fraud',
        'p1,12.5,GROCERY,DE,9,true,100,web,0',
        'p2,3,CRYPTO,"US",23,FALSE,1,,1',
      ].join('\r\n'),
    );
    const records = await all(readRecords(file, { type: payment }));
    expect(records.map((r) => r.record)).toEqual([
      {
        paymentId: 'p1',
        amount: 12.5,
        merchantCategory: 'GROCERY',
        country: 'DE',
        hourOfDay: 9,
        cardPresent: true,
        accountAgeDays: 100,
        channel: 'web',
      },
      {
        paymentId: 'p2',
        amount: 3,
        merchantCategory: 'CRYPTO',
        country: 'US',
        hourOfDay: 23,
        cardPresent: false,
        accountAgeDays: 1,
        channel: null,
      },
    ]);
    expect(records.map((r) => r.line)).toEqual([2, 3]);
    for (const r of records) expect(payment.isValid(r.record)).toBe(true);
  });

  it('names the row and the column that does not fit', async () => {
    const header = 'paymentId,amount,merchantCategory,country,hourOfDay,cardPresent,accountAgeDays';
    const cases: [string, RegExp][] = [
      ['p,12,5,GROCERY,DE,9,true,1', /:2: / /* too many cells */],
      ['p,"12,5",GROCERY,DE,9,true,1', /:2: field "amount": expected a number \(double\)/],
      ['p,1,SHOES,DE,9,true,1', /:2: field "merchantCategory": expected one of GROCERY, /],
      ['p,1,GROCERY,DE,9.5,true,1', /:2: field "hourOfDay": expected a whole number \(int\)/],
      ['p,1,GROCERY,DE,9,maybe,1', /:2: field "cardPresent": expected true or false/],
      ['p,1,GROCERY,DE,9,true,', /:2: field "accountAgeDays": expected a number \(int\)/],
    ];
    for (const [row, message] of cases) {
      const file = await fileWith('bad.csv', `${header}\n${row}\n`);
      const err = await failure(all(readRecords(file, { type: payment })));
      expect(err.message).toMatch(message);
      expect(err.line).toBe(2);
    }
  });

  it('reports a field without a column', async () => {
    const file = await fileWith('short.csv', 'paymentId,amount\np,1\n');
    const err = await failure(all(readRecords(file, { type: payment })));
    expect(err.message).toMatch(/short\.csv:2: field "merchantCategory": missing: no such column/);
  });

  it('reads JSON cells for arrays and records', async () => {
    const file = await fileWith(
      'requests.csv',
      'id,inputs\nr1,"[{""name"":""pixels"",""shape"":[2],""data"":[1,2]}]"\n',
    );
    const [record] = await all(readRecords(file, { type: request }));
    expect(record!.record).toMatchObject({
      id: 'r1',
      model: null,
      inputs: [{ name: 'pixels', shape: [2], data: [1, 2] }],
    });
  });
});

describe('Avro container files', () => {
  it('reads the records and converts them to the request type', async () => {
    const rows = [
      {
        paymentId: 'p1',
        amount: 1.5,
        merchantCategory: 'TRAVEL',
        country: 'FR',
        hourOfDay: 1,
        cardPresent: false,
        accountAgeDays: 7,
        channel: 'app',
      },
      {
        paymentId: 'p2',
        amount: 2,
        merchantCategory: 'GAMING',
        country: 'NL',
        hourOfDay: 2,
        cardPresent: true,
        accountAgeDays: 8,
        channel: null,
      },
    ];
    const file = await avroFile('payments.avro', payment, rows);
    const records = await all(readRecords(file, { type: payment }));
    expect(records.map((r) => r.record)).toEqual(rows);
    expect(records.map((r) => r.index)).toEqual([0, 1]);
    expect((await all(readRecords(file, { type: payment, skip: 1 }))).map((r) => r.index)).toEqual([
      1,
    ]);
  });

  it('names the record that does not fit', async () => {
    const other = avro.Type.forSchema({
      type: 'record',
      name: 'Other',
      fields: [{ name: 'paymentId', type: 'int' }],
    });
    const file = await avroFile('other.avro', other, [{ paymentId: 3 }]);
    const err = await failure(all(readRecords(file, { type: payment })));
    expect(err.message).toBe('other.avro:1: field "paymentId": expected text (string), got 3');
  });
});

it('refuses an unknown extension', async () => {
  const file = await fileWith('x.txt', '');
  expect(() => readRecords(file, { type: request })).toThrow(/unknown file type "\.txt"/);
});

describe('toAvroValue', () => {
  it('accepts Avro’s JSON union form and base64 bytes', () => {
    const type = avro.Type.forSchema({
      type: 'record',
      name: 'T',
      fields: [
        { name: 'u', type: ['null', 'string', 'int'] },
        { name: 'b', type: 'bytes' },
      ],
    });
    expect(toAvroValue(type, { u: { int: 3 }, b: 'AQID' })).toEqual({
      u: 3,
      b: Buffer.from([1, 2, 3]),
    });
  });
});

describe('output', () => {
  it('counts complete lines and cuts off a partial last one', async () => {
    const file = await fileWith('out.jsonl', '{"a":1}\n{"a":2}\n{"a":');
    expect(await completeLines(file)).toBe(2);
    expect(await readFile(file, 'utf8')).toBe('{"a":1}\n{"a":2}\n');
    expect(await completeLines(path.join(dir, 'missing.jsonl'))).toBe(0);
  });

  it('appends lines', async () => {
    const file = await fileWith('out.jsonl', '{"a":1}\n');
    const writer = await LineWriter.open(file);
    await writer.write(jsonLine({ a: 2, bytes: Buffer.from([255]), big: 2n ** 64n }));
    await writer.close();
    await writer.close();
    expect(await readFile(file, 'utf8')).toBe(
      '{"a":1}\n{"a":2,"bytes":"/w==","big":"18446744073709551616"}\n',
    );
  });
});
