import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serverLogLevel } from '../serverLog';

test('ordinary log lines are info', () => {
  assert.equal(serverLogLevel('2026-11-29 00:27:08,933 eyas engine ready: EngineInfo(engine=\'torch\')'), 'info');
  assert.equal(serverLogLevel('2026-11-29 00:27:08,933 eyas completion timed out after 20.0 s'), 'info');
});

test('tracebacks and exceptions are errors', () => {
  assert.equal(serverLogLevel('2026-11-29 00:27:08,933 eyas engine failed to load'), 'error');
  assert.equal(serverLogLevel('Traceback (most recent call last):'), 'error');
  assert.equal(serverLogLevel('  File "/x/completion/engine.py", line 3, in load'), 'error');
  assert.equal(serverLogLevel('OSError: no such model'), 'error');
  assert.equal(serverLogLevel('torch.OutOfMemoryError: CUDA out of memory'), 'error');
});
