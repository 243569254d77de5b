// Which command runs the server. Pure: the file system and environment come in as arguments, so
// the order of the search is unit-tested without VS Code.
import * as path from 'node:path';

export interface ServerCommand {
  command: string;
  args: string[];
  /** Why this one was chosen, for the log. */
  source: string;
}

export interface DiscoveryInput {
  serverPath: string;          // eyas.serverPath, '' when unset
  pythonPath: string;          // eyas.pythonPath, '' when unset
  serverArgs: string[];        // eyas.serverArgs, appended after `serve`
  workspaceFolders: string[];  // file-system paths, first one first
  pathEnv: string;             // $PATH
  home: string;
  platform: NodeJS.Platform;
  isExecutable: (file: string) => boolean;
}

export type Discovery = ServerCommand | { error: string };

const SERVE = ['serve'];
const PYTHON_MODULE = ['-m', 'completion.cli', 'serve'];   // the `eyas` console script's module

export function findServer(input: DiscoveryInput): Discovery {
  const exe = input.platform === 'win32' ? 'eyas.exe' : 'eyas';
  const venvBin = input.platform === 'win32' ? path.join('.venv', 'Scripts') : path.join('.venv', 'bin');
  const extra = input.serverArgs;

  // An explicit setting wins and never silently falls back: the user asked for that binary.
  if (input.pythonPath) {
    const python = resolveUserPath(input.pythonPath, input);
    return input.isExecutable(python)
      ? { command: python, args: [...PYTHON_MODULE, ...extra], source: 'eyas.pythonPath' }
      : { error: `eyas.pythonPath is not an executable: ${python}` };
  }
  if (input.serverPath) {
    // A bare name (`eyas-nightly`) is a command on PATH, as in a shell.
    const bare = !input.serverPath.includes('/') && !input.serverPath.includes(path.sep) &&
      !input.serverPath.startsWith('~');
    const server = bare ? onPath(input.serverPath, input) ?? input.serverPath : resolveUserPath(input.serverPath, input);
    return input.isExecutable(server)
      ? { command: server, args: [...SERVE, ...extra], source: 'eyas.serverPath' }
      : { error: `eyas.serverPath is not an executable: ${server}` };
  }
  for (const folder of input.workspaceFolders) {
    const candidate = path.join(folder, venvBin, exe);
    if (input.isExecutable(candidate)) {
      return { command: candidate, args: [...SERVE, ...extra], source: 'the workspace .venv' };
    }
  }
  const found = onPath(exe, input);
  if (found) {
    return { command: found, args: [...SERVE, ...extra], source: 'PATH' };
  }
  return {
    error: `no Eyas server found: looked for ${path.join(venvBin, exe)} in the workspace folders and ` +
      `for ${exe} on PATH; set eyas.serverPath (or eyas.pythonPath)`,
  };
}

function onPath(name: string, input: Pick<DiscoveryInput, 'pathEnv' | 'isExecutable'>): string | undefined {
  for (const dir of input.pathEnv.split(path.delimiter)) {
    if (dir && input.isExecutable(path.join(dir, name))) {
      return path.join(dir, name);
    }
  }
  return undefined;
}

/** `~/x` from the home directory; a relative path from the first workspace folder (settings are
 * usually written per workspace, so that is what a relative path means to the user). */
export function resolveUserPath(p: string, input: Pick<DiscoveryInput, 'home' | 'workspaceFolders'>): string {
  if (p === '~' || p.startsWith('~/')) {
    return path.join(input.home, p.slice(1));
  }
  if (path.isAbsolute(p) || input.workspaceFolders.length === 0) {
    return p;
  }
  return path.join(input.workspaceFolders[0], p);
}
