import assert from 'node:assert/strict';
import { test } from 'node:test';
import { after, PartialAcceptTracker } from '../partialAccept';

const at = (line: number, character: number) => ({ line, character });
const insert = (line: number, character: number, text: string) => [{ start: at(line, character), end: at(line, character), text }];

test('a word accepted, then a line: both reported, positions follow', () => {
  const t = new PartialAcceptTracker();
  t.shown('u', at(1, 4), 'return a + b\nprint(x)');
  assert.equal(t.edited('u', insert(1, 4, 'return')), 6);
  assert.equal(t.edited('u', insert(1, 10, ' a + b\n')), 7);
  assert.equal(t.edited('u', insert(2, 0, 'print(x)')), 0);   // the rest: a full accept
});

test('typing through one character is not an accept, but keeps tracking', () => {
  const t = new PartialAcceptTracker();
  t.shown('u', at(0, 0), 'foo(bar)');
  assert.equal(t.edited('u', insert(0, 0, 'f')), 0);
  assert.equal(t.edited('u', insert(0, 1, 'oo')), 2);
});

test('anything else ends the tracking', () => {
  const t = new PartialAcceptTracker();
  t.shown('u', at(0, 0), 'foo(bar)');
  assert.equal(t.edited('u', insert(0, 0, 'xyz')), 0);
  assert.equal(t.edited('u', insert(0, 3, 'foo')), 0);
  t.shown('u', at(0, 0), 'foo(bar)');
  assert.equal(t.edited('other', insert(0, 0, 'foo')), 0);   // another document: ignored
  assert.equal(t.edited('u', insert(0, 0, 'foo')), 3);
});

test('after() counts lines and columns', () => {
  assert.deepEqual(after(at(2, 3), 'ab'), at(2, 5));
  assert.deepEqual(after(at(2, 3), 'ab\n  c'), at(3, 3));
});
