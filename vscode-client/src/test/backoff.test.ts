import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff } from '../backoff';

const options = { initialMs: 1000, maxMs: 8000, maxAttempts: 5, stableMs: 60000 };

test('delays double up to the cap, then it gives up', () => {
  const b = new Backoff(options);
  const delays = [];
  for (let i = 0; i < 6; i++) {
    b.started(i * 10);
    delays.push(b.nextDelay(i * 10 + 5));
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000, undefined]);
});

test('a run that lasted resets the count', () => {
  const b = new Backoff(options);
  b.started(0);
  b.nextDelay(1);
  b.started(2);
  assert.equal(b.nextDelay(3), 2000);
  b.started(10);
  assert.equal(b.nextDelay(10 + 60000), 1000);
});

test('reset starts afresh after giving up', () => {
  const b = new Backoff({ ...options, maxAttempts: 1 });
  assert.equal(b.nextDelay(0), 1000);
  assert.equal(b.nextDelay(1), undefined);
  b.reset();
  assert.equal(b.nextDelay(2), 1000);
});
