/**
 * The models one worker serves, and which one a request gets.
 *
 * A request names a model and a version, or leaves either out (null). The model defaults to its
 * topic's model (model.byTopic), else the default model (model.name); the version defaults to
 * the one that model serves by policy (its hot-swappable current version, with its canary).
 * Other versions are served only to requests that name them (model.versions, a canary version).
 * What cannot be served is refused with its own code: UNKNOWN_MODEL or UNKNOWN_MODEL_VERSION.
 */
import { StreamscoreError } from '../errors.js';
import type { ModelRunner } from './types.js';

export interface ServedModel {
  /** Answers requests that name no version (may be hot-swapped: its info.version can change). */
  main: ModelRunner;
  /** Further versions, served to requests that name them. */
  pinned: ModelRunner[];
}

export interface Resolved {
  runner: ModelRunner;
  /** True when it is a model's main runner reached without naming a version (canary applies). */
  byPolicy: boolean;
}

export class ModelCatalog {
  private readonly models = new Map<string, ServedModel>();
  private readonly byTopic = new Map<string, string>();

  constructor(private readonly defaultModel: string) {}

  /** Serves `name`; a name added twice is a programming error. */
  add(name: string, served: ServedModel): this {
    if (this.models.has(name)) throw new Error(`model ${name} is served twice`);
    this.models.set(name, served);
    return this;
  }

  /** Requests on `topic` that name no model get `name`. */
  route(topic: string, name: string): this {
    if (!this.models.has(name))
      throw new Error(`topic ${topic} maps to ${name}, which is not served`);
    this.byTopic.set(topic, name);
    return this;
  }

  /** The names of the models served, for messages. */
  private get names(): string[] {
    return [...this.models.keys()];
  }

  resolve(topic: string, model: string | null, version: string | null): Resolved {
    const name = model ?? this.byTopic.get(topic) ?? this.defaultModel;
    const served = this.models.get(name);
    if (!served) {
      throw new StreamscoreError(
        'UNKNOWN_MODEL',
        `request asks for model ${name}; this worker serves ${this.names.join(', ')}`,
        { details: { model: name } },
      );
    }
    if (version === null) return { runner: served.main, byPolicy: true };
    if (served.main.info.version === version) return { runner: served.main, byPolicy: false };
    const pinned = served.pinned.find((r) => r.info.version === version);
    if (pinned) return { runner: pinned, byPolicy: false };
    const versions = [served.main, ...served.pinned].map((r) => r.info.version);
    throw new StreamscoreError(
      'UNKNOWN_MODEL_VERSION',
      `request asks for ${name} version ${version}; this worker serves ${name} version${versions.length > 1 ? 's' : ''} ${versions.join(', ')}`,
      { details: { model: name, version } },
    );
  }
}
