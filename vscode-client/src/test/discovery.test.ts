import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiscoveryInput, findServer, resolveUserPath } from '../discovery';

function input(executables: string[], over: Partial<DiscoveryInput> = {}): DiscoveryInput {
  return {
    serverPath: '', pythonPath: '', serverArgs: [], workspaceFolders: ['/ws/a', '/ws/b'],
    pathEnv: '/usr/local/bin:/usr/bin', home: '/home/u', platform: 'linux',
    isExecutable: (f) => executables.includes(f), ...over,
  };
}

test('the workspace .venv comes before PATH', () => {
  const found = findServer(input(['/ws/b/.venv/bin/eyas', '/usr/bin/eyas']));
  assert.deepEqual(found, { command: '/ws/b/.venv/bin/eyas', args: ['serve'], source: 'the workspace .venv' });
});

test('the first workspace folder with a .venv wins', () => {
  const found = findServer(input(['/ws/a/.venv/bin/eyas', '/ws/b/.venv/bin/eyas']));
  assert.equal('command' in found && found.command, '/ws/a/.venv/bin/eyas');
});

test('PATH is searched in order when no .venv has the server', () => {
  const found = findServer(input(['/usr/bin/eyas', '/usr/local/bin/eyas']));
  assert.deepEqual(found, { command: '/usr/local/bin/eyas', args: ['serve'], source: 'PATH' });
});

test('nothing found: an error that names the setting to fix', () => {
  const found = findServer(input([]));
  assert.ok('error' in found && found.error.includes('eyas.serverPath'));
});

test('eyas.serverPath wins over discovery and gets the extra arguments', () => {
  const found = findServer(input(['/opt/eyas/bin/eyas', '/ws/a/.venv/bin/eyas'],
    { serverPath: '/opt/eyas/bin/eyas', serverArgs: ['--device', 'cpu'] }));
  assert.deepEqual(found, { command: '/opt/eyas/bin/eyas', args: ['serve', '--device', 'cpu'], source: 'eyas.serverPath' });
});

test('a bad eyas.serverPath is an error, not a silent fallback', () => {
  const found = findServer(input(['/ws/a/.venv/bin/eyas'], { serverPath: '/nope/eyas' }));
  assert.ok('error' in found && found.error.includes('/nope/eyas'));
});

test('a relative eyas.serverPath is taken from the first folder, ~ from home, a bare name from PATH', () => {
  assert.equal(resolveUserPath('tools/eyas', input([])), '/ws/a/tools/eyas');
  assert.equal(resolveUserPath('~/venv/bin/eyas', input([])), '/home/u/venv/bin/eyas');
  const found = findServer(input(['/usr/bin/eyas-dev'], { serverPath: 'eyas-dev' }));
  assert.equal('command' in found && found.command, '/usr/bin/eyas-dev');
});

test('eyas.pythonPath runs the module', () => {
  const found = findServer(input(['/usr/bin/python3', '/ws/a/.venv/bin/eyas'], { pythonPath: '/usr/bin/python3' }));
  assert.deepEqual(found, { command: '/usr/bin/python3', args: ['-m', 'completion.cli', 'serve'], source: 'eyas.pythonPath' });
});

test('Windows layout: .venv\\Scripts\\eyas.exe', () => {
  // path.join uses the host separator, so build the expected path the same way
  const found = findServer(input([], { platform: 'win32', isExecutable: (f) => f.endsWith('eyas.exe') && f.includes('Scripts') }));
  assert.ok('command' in found && found.command.endsWith('eyas.exe'));
});
