import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULTS, EyasSettings, isEnabledFor, readSettings, toServerSettings } from '../settings';

const settings = (over: Partial<EyasSettings> = {}): EyasSettings => ({ ...DEFAULTS, ...over });

test('defaults map to the server defaults, with unset strings left out', () => {
  assert.deepEqual(toServerSettings(settings()), {
    engine: 'torch', maxTokens: 64, temperature: 0, topP: 1, requestTimeout: 20,
    enable: { '*': true }, multiline: { '*': 'auto' }, cache: true, prefetch: true,
  });
});

test('every setting reaches its server key', () => {
  const out = toServerSettings(settings({
    engine: 'openai', url: 'http://127.0.0.1:8000', apiKeyEnv: 'KEY', model: 'm', draft: 'embedded', device: 'cpu',
    precision: 'int8', speculativeK: 4, maxTokens: 32, temperature: 0.2, topP: 0.9, requestTimeout: 5, multiline: 'never',
    enableByLanguage: { markdown: false }, multilineByLanguage: { python: 'always' }, cache: false, prefetch: false,
  }));
  assert.deepEqual(out, {
    engine: 'openai', url: 'http://127.0.0.1:8000', apiKeyEnv: 'KEY', model: 'm', draft: 'embedded', device: 'cpu',
    precision: 'int8', speculativeK: 4, maxTokens: 32, temperature: 0.2, topP: 0.9, requestTimeout: 5,
    enable: { '*': true, markdown: false }, multiline: { '*': 'never', python: 'always' }, cache: false, prefetch: false,
  });
});

test('the global switch turns every language off', () => {
  const out = toServerSettings(settings({ enable: false, enableByLanguage: { python: true } }));
  assert.deepEqual(out.enable, { '*': false, python: false });
});

test('a language removed from a map is reset, because the server merges maps', () => {
  const first = toServerSettings(settings({ enableByLanguage: { markdown: false }, multilineByLanguage: { go: 'never' } }));
  const second = toServerSettings(settings(), first);
  assert.deepEqual(second.enable, { '*': true, markdown: true });
  assert.deepEqual(second.multiline, { '*': 'auto', go: 'auto' });
});

test('a cleared model is sent as null once something was sent, so the server drops it', () => {
  const first = toServerSettings(settings({ model: 'big', url: 'http://x' }));
  const second = toServerSettings(settings(), first);
  assert.equal(second.model, null);
  assert.equal(second.url, null);
  assert.ok(!('device' in second));
});

test('readSettings keeps good values and replaces wrong types by defaults', () => {
  const raw: Record<string, unknown> = {
    enable: 'yes', maxTokens: 16, model: 42, speculativeK: 8, enableByLanguage: { python: false, go: 'no' },
    multilineByLanguage: { python: 'never', rust: 'sometimes' }, multiline: 'always',
  };
  const s = readSettings((k) => raw[k]);
  assert.equal(s.enable, true);
  assert.equal(s.maxTokens, 16);
  assert.equal(s.model, '');
  assert.equal(s.speculativeK, 8);
  assert.deepEqual(s.enableByLanguage, { python: false });
  assert.deepEqual(s.multilineByLanguage, { python: 'never' });
  assert.equal(s.multiline, 'always');
});

test('isEnabledFor: language, then "*", then on', () => {
  const s = settings({ enableByLanguage: { markdown: false, '*': true } });
  assert.equal(isEnabledFor(s, 'markdown'), false);
  assert.equal(isEnabledFor(s, 'python'), true);
  assert.equal(isEnabledFor(settings({ enableByLanguage: { '*': false, python: true } }), 'go'), false);
  assert.equal(isEnabledFor(settings({ enable: false }), 'python'), false);
});
