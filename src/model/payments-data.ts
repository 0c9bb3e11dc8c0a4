/**
 * Synthetic card payments for the fraud demo model (models/fraud): records shaped like
 * schemas/examples/payment.avsc, each with a ground-truth `fraud` flag drawn from a hidden rule,
 * and the layout that turns a payment into the model's input row.
 *
 * Everything is seeded (mulberry32): `generatePayments(n, seed)` returns the same payments on
 * every machine, and its first k payments are `generatePayments(k, seed)`. The data is made up;
 * it imitates the kind of signal a fraud model learns, nothing more.
 *
 * The hidden rule (`hiddenFraudProbability`) is a logistic score: large amounts, night hours
 * (00–05), CRYPTO / GAMING / ELECTRONICS merchants, young accounts, card not present and a country
 * outside the usual eight (the vocabulary) raise it, with an extra push when a large night-time
 * payment to a risky merchant comes from a young account. The label is a coin flip with that
 * probability, so some fraud looks harmless and some harmless payments look like fraud: no model
 * can be right every time.
 */
import type { FeatureCard } from './card.js';
import { mulberry32 } from './digits-data.js';

export const MERCHANT_CATEGORIES = [
  'GROCERY',
  'RESTAURANT',
  'TRAVEL',
  'ELECTRONICS',
  'GAMING',
  'CRYPTO',
] as const;
export type MerchantCategory = (typeof MERCHANT_CATEGORIES)[number];

/** Seeds of the training and held-out payments of models/fraud/1 (scripts/train-fraud.ts). */
export const PAYMENTS_TRAIN_SEED = 20250101;
export const PAYMENTS_HELD_OUT_SEED = 20250202;
/** Seed of the sample data/payments/payments.jsonl (scripts/generate-payments.ts). */
export const PAYMENTS_SAMPLE_SEED = 20250303;

/** The countries the model has a column for (ISO 3166 alpha-2); any other is all zeros. */
export const PAYMENT_COUNTRIES = ['DE', 'FR', 'NL', 'BE', 'ES', 'IT', 'GB', 'US'] as const;

/** A payment as in schemas/examples/payment.avsc (com.example.payments.Payment). */
export interface Payment {
  paymentId: string;
  /** EUR. */
  amount: number;
  merchantCategory: MerchantCategory;
  /** ISO 3166 alpha-2. */
  country: string;
  /** 0..23, the cardholder's local time. */
  hourOfDay: number;
  cardPresent: boolean;
  accountAgeDays: number;
  /** Not a model input: lets a schema-evolution test drop a field. */
  channel: string | null;
}

export interface LabelledPayment {
  payment: Payment;
  /** Ground truth from the hidden rule; not part of the record. */
  fraud: boolean;
}

/** A column group of the input without its fitted constants (see `fitPaymentFeatures`). */
export type FeatureLayout =
  | { name: string; kind: 'numeric'; description?: string }
  | { name: string; kind: 'oneHot'; vocabulary: readonly string[]; description?: string };

/** The model's input, in column order: 4 numeric columns + 6 + 8 one-hot columns = 18. */
export const PAYMENT_FEATURES: readonly FeatureLayout[] = [
  { name: 'amount', kind: 'numeric', description: 'EUR' },
  {
    name: 'merchantCategory',
    kind: 'oneHot',
    vocabulary: MERCHANT_CATEGORIES,
    description: 'one column per enum symbol',
  },
  {
    name: 'country',
    kind: 'oneHot',
    vocabulary: PAYMENT_COUNTRIES,
    description: 'ISO 3166 alpha-2; any other country is all zeros',
  },
  { name: 'hourOfDay', kind: 'numeric', description: '0..23' },
  { name: 'cardPresent', kind: 'numeric', description: 'boolean as 0 / 1' },
  { name: 'accountAgeDays', kind: 'numeric', description: 'days since the account was opened' },
];

/** Columns a feature group takes in the input row. */
export function featureWidth(feature: FeatureLayout | FeatureCard): number {
  return feature.kind === 'numeric' ? 1 : feature.vocabulary.length;
}

/** Width of the whole input row. */
export function inputWidth(features: readonly (FeatureLayout | FeatureCard)[]): number {
  return features.reduce((n, f) => n + featureWidth(f), 0);
}

function fieldOf(payment: Payment, name: string): unknown {
  return (payment as unknown as Record<string, unknown>)[name];
}

function numericValue(payment: Payment, name: string): number {
  const value = fieldOf(payment, name);
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  throw new TypeError(`payment field "${name}" is ${String(value)}, not a number or boolean`);
}

/**
 * Mean and (population) standard deviation of each numeric feature over `payments`: the card's
 * `features`. A constant column gets std 1 so the input stays finite.
 */
export function fitPaymentFeatures(
  payments: readonly Payment[],
  layout: readonly FeatureLayout[] = PAYMENT_FEATURES,
): FeatureCard[] {
  return layout.map((f): FeatureCard => {
    const description = f.description === undefined ? {} : { description: f.description };
    if (f.kind === 'oneHot')
      return { name: f.name, kind: 'oneHot', vocabulary: [...f.vocabulary], ...description };
    let sum = 0;
    for (const p of payments) sum += numericValue(p, f.name);
    const mean = sum / payments.length;
    let squares = 0;
    for (const p of payments) squares += (numericValue(p, f.name) - mean) ** 2;
    const std = Math.sqrt(squares / payments.length);
    return { name: f.name, kind: 'numeric', mean, std: std > 0 ? std : 1, ...description };
  });
}

/**
 * One payment as the model's input row: numeric fields (booleans as 0 / 1) become
 * (x - mean) / std; a one-hot field is 1 in the column of its value, all zeros for a value not in
 * the vocabulary. Writes into `out` at `offset` when given (for packing batches).
 */
export function paymentFeatures(
  payment: Payment,
  features: readonly FeatureCard[],
  out: Float32Array = new Float32Array(inputWidth(features)),
  offset = 0,
): Float32Array {
  let column = offset;
  for (const f of features) {
    if (f.kind === 'numeric') {
      out[column++] = (numericValue(payment, f.name) - f.mean) / f.std;
    } else {
      const index = f.vocabulary.indexOf(String(fieldOf(payment, f.name)));
      out.fill(0, column, column + f.vocabulary.length);
      if (index >= 0) out[column + index] = 1;
      column += f.vocabulary.length;
    }
  }
  return out;
}

/** Rows of `payments` laid end to end: the single input of a PackedBatch. */
export function packPayments(
  payments: readonly Payment[],
  features: readonly FeatureCard[],
): Float32Array {
  const width = inputWidth(features);
  const out = new Float32Array(payments.length * width);
  payments.forEach((p, i) => paymentFeatures(p, features, out, i * width));
  return out;
}

// ---- the generator -------------------------------------------------------------------------

const CATEGORY_WEIGHTS: Record<MerchantCategory, number> = {
  GROCERY: 0.3,
  RESTAURANT: 0.22,
  TRAVEL: 0.1,
  ELECTRONICS: 0.16,
  GAMING: 0.13,
  CRYPTO: 0.09,
};
/** Median amount in EUR per category; amounts are log-normal around it. */
const CATEGORY_MEDIAN_EUR: Record<MerchantCategory, number> = {
  GROCERY: 45,
  RESTAURANT: 38,
  TRAVEL: 320,
  ELECTRONICS: 220,
  GAMING: 30,
  CRYPTO: 180,
};
const CATEGORY_CARD_PRESENT: Record<MerchantCategory, number> = {
  GROCERY: 0.85,
  RESTAURANT: 0.8,
  TRAVEL: 0.25,
  ELECTRONICS: 0.45,
  GAMING: 0.05,
  CRYPTO: 0.03,
};
const COUNTRY_WEIGHTS: Record<string, number> = {
  DE: 0.3,
  FR: 0.15,
  NL: 0.1,
  BE: 0.05,
  ES: 0.1,
  IT: 0.09,
  GB: 0.07,
  US: 0.05,
  // Outside the model's vocabulary: seen as "other" (all zeros).
  BR: 0.015,
  CA: 0.015,
  JP: 0.01,
  SG: 0.01,
  AE: 0.01,
  ZA: 0.01,
  MX: 0.01,
  IN: 0.01,
};
/** Relative weight of each hour 0..23 for ordinary traffic: quiet nights, busy days. */
const HOUR_WEIGHTS = [
  1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 4.5, 5, 5.5, 6.5, 6, 5, 5, 5.5, 6.5, 7, 6.5, 5, 4, 3, 2,
];
const CHANNELS = ['web', 'app', 'pos'] as const;

/** An index drawn with probability proportional to `weights[index]`. */
function pickIndex(weights: readonly number[], random: () => number): number {
  const total = weights.reduce((s, w) => s + w, 0);
  let u = random() * total;
  for (let i = 0; i < weights.length; i++) {
    u -= weights[i]!;
    if (u < 0) return i;
  }
  return weights.length - 1;
}

/** A key of `weights` drawn with probability proportional to its value. */
function pick<K extends string>(weights: Record<K, number>, random: () => number): K {
  const keys = Object.keys(weights) as K[];
  return keys[
    pickIndex(
      keys.map((k) => weights[k]),
      random,
    )
  ]!;
}

/** Standard normal (Box–Muller). */
function normal(random: () => number): number {
  const u = 1 - random(); // (0, 1]
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function hex(random: () => number, digits: number): string {
  let s = '';
  while (s.length < digits)
    s += Math.floor(random() * 0x10000)
      .toString(16)
      .padStart(4, '0');
  return s.slice(0, digits);
}

/** Log-odds added by the merchant category. */
const CATEGORY_RISK: Record<MerchantCategory, number> = {
  GROCERY: -2.5,
  RESTAURANT: -1.5,
  TRAVEL: 0.75,
  ELECTRONICS: 2.75,
  GAMING: 3.75,
  CRYPTO: 5,
};

function isNight(hour: number): boolean {
  return hour <= 5;
}

/**
 * The hidden rule: the probability that `payment` is fraud. The generator draws the label from
 * it; a model sees only the fields. Exported so a script can report the best accuracy any model
 * could reach on a sample (predicting fraud where this is over 0.5).
 */
export function hiddenFraudProbability(payment: Payment): number {
  const { amount, merchantCategory, country, hourOfDay, cardPresent, accountAgeDays } = payment;
  // Log-odds, starting from a baseline of about 1 in 22,000.
  let logit = -10;
  logit += 2.25 * Math.max(0, Math.log(amount / 100)); // grows past 100 EUR
  if (isNight(hourOfDay)) logit += 4.25;
  logit += CATEGORY_RISK[merchantCategory];
  if (accountAgeDays < 30) logit += 4.5;
  else if (accountAgeDays < 180) logit += 1.75;
  if (!cardPresent) logit += 3.25;
  if (!(PAYMENT_COUNTRIES as readonly string[]).includes(country)) logit += 3.75;
  else if (country === 'US' || country === 'GB') logit += 1;
  const riskyMerchant = CATEGORY_RISK[merchantCategory] > 2;
  if (riskyMerchant && isNight(hourOfDay) && amount > 300 && accountAgeDays < 90) logit += 3.75;
  return 1 / (1 + Math.exp(-logit));
}

/**
 * `n` payments from `seed`, each with its label. Payments are drawn one after another from one
 * PRNG, a fixed number of draws each, so a longer run extends a shorter one with the same seed.
 */
export function generatePayments(n: number, seed: number): LabelledPayment[] {
  const random = mulberry32(seed);
  const out: LabelledPayment[] = [];
  for (let i = 0; i < n; i++) {
    const paymentId = `pay_${hex(random, 16)}`;
    const merchantCategory = pick(CATEGORY_WEIGHTS, random);
    const rawAmount = CATEGORY_MEDIAN_EUR[merchantCategory] * Math.exp(0.9 * normal(random));
    const amount = Math.round(Math.min(Math.max(rawAmount, 0.5), 10_000) * 100) / 100;
    const country = pick(COUNTRY_WEIGHTS, random);
    const hourOfDay = pickIndex(HOUR_WEIGHTS, random);
    const cardPresent = random() < CATEGORY_CARD_PRESENT[merchantCategory];
    // One account in eight is new (mean 25 days); the rest are years old (mean ~3 years).
    const young = random() < 0.125;
    const accountAgeDays = Math.min(
      Math.floor(-Math.log(1 - random()) * (young ? 25 : 1100)),
      7300,
    );
    const channelDraw = random();
    const channel =
      channelDraw < 0.3
        ? null
        : cardPresent
          ? 'pos'
          : CHANNELS[Math.floor(((channelDraw - 0.3) / 0.7) * 2)]!;
    const payment: Payment = {
      paymentId,
      amount,
      merchantCategory,
      country,
      hourOfDay,
      cardPresent,
      accountAgeDays,
      channel,
    };
    const fraud = random() < hiddenFraudProbability(payment);
    out.push({ payment, fraud });
  }
  return out;
}

// ---- scoring -------------------------------------------------------------------------------

export interface FraudMetrics {
  /** Share of payments whose predicted class (fraud when p(fraud) ≥ threshold) is right. */
  accuracy: number;
  /** Of the payments predicted fraud, the share that are fraud (0 when none is predicted). */
  precision: number;
  /** Of the fraud payments, the share predicted fraud (0 when there is none). */
  recall: number;
  /** Share of the payments that are fraud. */
  fraudRate: number;
  /** Accuracy of always answering "legit": 1 - fraudRate. */
  majorityClassAccuracy: number;
}

/**
 * Metrics of fraud probabilities against the ground truth. `probabilities` holds one value per
 * payment or, with `width` 2, the model's softmax rows [legit, fraud].
 */
export function fraudMetrics(
  probabilities: Float32Array | readonly number[],
  fraud: readonly boolean[],
  { width = 1, threshold = 0.5 }: { width?: number; threshold?: number } = {},
): FraudMetrics {
  if (probabilities.length !== fraud.length * width) {
    throw new RangeError(
      `${probabilities.length} probabilities for ${fraud.length} payments of width ${width}`,
    );
  }
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  fraud.forEach((actual, i) => {
    const predicted = probabilities[i * width + width - 1]! >= threshold;
    if (predicted && actual) tp++;
    else if (predicted) fp++;
    else if (actual) fn++;
    else tn++;
  });
  const fraudRate = (tp + fn) / fraud.length;
  return {
    accuracy: (tp + tn) / fraud.length,
    precision: tp + fp === 0 ? 0 : tp / (tp + fp),
    recall: tp + fn === 0 ? 0 : tp / (tp + fn),
    fraudRate,
    majorityClassAccuracy: 1 - fraudRate,
  };
}
