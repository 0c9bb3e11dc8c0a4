/**
 * findJava21() against fake `java` executables (shell scripts printing a version), so these run
 * anywhere; starting the real registry is the integration project's business (global-setup.ts).
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStreamscoreError } from '../../src/errors.js';
import { findJava21, parseJavaMajor } from '../../src/registry/local-registry.js';

describe('parseJavaMajor', () => {
  it.each([
    ['openjdk version "17.0.15" 2025-04-15', 17],
    ['openjdk version "21.0.4" 2024-07-16 LTS', 21],
    ['openjdk version "25" 2025-09-16', 25],
    ['java version "1.8.0_402"', 8],
    ['openjdk version "22-ea" 2024-03-19', 22],
    ['Picked up JAVA_TOOL_OPTIONS: -Xss1m\nopenjdk version "21.0.1" 2023-10-17', 21],
  ])('%j is Java %i', (text, major) => {
    expect(parseJavaMajor(text)).toBe(major);
  });

  it('is undefined without a version', () => {
    expect(parseJavaMajor('command not found')).toBeUndefined();
  });
});

describe('findJava21', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'streamscore-java-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** `<dir>/<name>/bin/java`, printing `version` to stderr as a JDK does; returns `<dir>/<name>`. */
  async function fakeJdk(name: string, version: string): Promise<string> {
    const home = path.join(dir, name);
    await mkdir(path.join(home, 'bin'), { recursive: true });
    const java = path.join(home, 'bin', 'java');
    await writeFile(java, `#!/bin/sh\necho 'openjdk version "${version}" 2025-01-01' >&2\n`);
    await chmod(java, 0o755);
    return home;
  }

  it('takes JAVA_HOME when it is new enough', async () => {
    const home = await fakeJdk('jdk21', '21.0.4');
    await fakeJdk('jvms/jdk25', '25');
    const found = await findJava21({
      env: { JAVA_HOME: home, PATH: '' },
      jvmRoots: [path.join(dir, 'jvms')],
    });
    expect(found).toEqual({ java: path.join(home, 'bin', 'java'), major: 21 });
  });

  it('passes over an older JAVA_HOME and `java` on PATH for the newest JDK under the JVM folder', async () => {
    const old = await fakeJdk('jdk17', '17.0.15');
    await fakeJdk('jvms/a-jdk21', '21.0.4');
    const newest = await fakeJdk('jvms/b-jdk25', '25');
    await fakeJdk('jvms/c-jdk11', '11.0.2');
    const found = await findJava21({
      env: { JAVA_HOME: old, PATH: path.join(old, 'bin') },
      jvmRoots: [path.join(dir, 'jvms')],
    });
    expect(found).toEqual({ java: path.join(newest, 'bin', 'java'), major: 25 });
  });

  it('takes `java` on PATH when JAVA_HOME is not set', async () => {
    const home = await fakeJdk('jdk22', '22.0.1');
    const found = await findJava21({ env: { PATH: path.join(home, 'bin') }, jvmRoots: [] });
    expect(found).toEqual({ java: 'java', major: 22 });
  });

  it('fails naming every place it looked and how to fix it', async () => {
    const old = await fakeJdk('jdk17', '17.0.15');
    await fakeJdk('jvms/jdk11', '11.0.2');
    const err: unknown = await findJava21({
      env: { JAVA_HOME: old, PATH: path.join(old, 'bin') },
      jvmRoots: [path.join(dir, 'jvms'), path.join(dir, 'missing')],
    }).catch((e: unknown) => e);
    expect(isStreamscoreError(err) && err.code).toBe('LOCAL_REGISTRY_FAILED');
    const message = (err as Error).message;
    expect(message).toContain('needs Java 21 or newer');
    expect(message).toContain(`JAVA_HOME (${path.join(old, 'bin', 'java')}): Java 17`);
    expect(message).toContain('`java` on PATH: Java 17');
    expect(message).toContain(`${path.join(dir, 'jvms', 'jdk11', 'bin', 'java')}: Java 11`);
    expect(message).toContain(`${path.join(dir, 'missing')}: no such folder`);
    expect(message).toContain('set JAVA_HOME');
  });

  it('says `java` is not on PATH when it is not', async () => {
    const err: unknown = await findJava21({ env: { PATH: dir }, jvmRoots: [] }).catch(
      (e: unknown) => e,
    );
    expect((err as Error).message).toContain('JAVA_HOME: not set');
    expect((err as Error).message).toContain('`java` on PATH: not found');
  });
});
