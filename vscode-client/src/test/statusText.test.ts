import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EyasStatus } from '../protocol';
import { shortModel, statusView, summary } from '../statusText';

const ready = (over: Partial<EyasStatus> = {}): EyasStatus => ({
  state: 'ready', error: null, engine: 'torch', model: '/x/models/pocket/target', draft: 'embedded', device: 'cpu',
  served: 3, shown: 3, accepted: 1, partial: 0, shown_chars: 40, accepted_chars: 12, acceptance_length: 2.345,
  latency_ms: { last: { total: 84.6, prefill: 20, decode: 60 }, p50_total: 90, recent_totals: [90, 84.6] }, ...over,
});

test('ready: model, engine, last latency, acceptance length', () => {
  const v = statusView({ enabled: true, phase: 'running', status: ready() });
  assert.equal(v.text, '$(sparkle) target · torch · 85 ms · acc 2.35');
  assert.equal(v.loading, false);
  assert.match(v.tooltip, /turn completions off/);
});

test('no drafter: no acceptance length', () => {
  const v = statusView({ enabled: true, phase: 'running', status: ready({ draft: null, acceptance_length: 1 }) });
  assert.equal(v.text, '$(sparkle) target · torch · 85 ms');
});

test('no latency or acceptance yet: just model and engine', () => {
  const v = statusView({ enabled: true, phase: 'running',
    status: ready({ acceptance_length: null, latency_ms: { last: null, p50_total: null, recent_totals: [] } }) });
  assert.equal(v.text, '$(sparkle) target · torch');
});

test('spinner while starting or loading', () => {
  for (const input of [{ phase: 'starting' as const }, { phase: 'running' as const, status: ready({ state: 'loading' }) },
    { phase: 'running' as const, status: ready({ state: 'not loaded' }) }, { phase: 'restarting' as const }]) {
    const v = statusView({ enabled: true, ...input });
    assert.equal(v.text, '$(sync~spin) Eyas');
    assert.equal(v.loading, true);
  }
});

test('off, failed, missing', () => {
  assert.equal(statusView({ enabled: false, phase: 'running', status: ready() }).text, '$(circle-slash) Eyas off');
  const failed = statusView({ enabled: true, phase: 'running', status: ready({ state: 'failed', error: 'OSError: no model' }) });
  assert.equal(failed.text, '$(error) Eyas');
  assert.match(failed.tooltip, /OSError: no model/);
  const missing = statusView({ enabled: true, phase: 'missing', problem: 'no Eyas server found' });
  assert.equal(missing.text, '$(warning) Eyas');
  assert.match(missing.tooltip, /no Eyas server found/);
});

test('shortModel and summary', () => {
  assert.equal(shortModel('Qwen/Qwen3-0.6B'), 'Qwen3-0.6B');
  assert.equal(shortModel('embedded'), 'embedded');
  const text = summary(ready());
  assert.match(text, /accepted 1 \(12 chars\)/);
  assert.match(text, /latency last 85 ms \(prefill 20 ms, decode 60 ms\), p50 90 ms/);
  assert.match(text, /acceptance length 2\.35/);
});
