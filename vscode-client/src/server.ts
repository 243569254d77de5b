// The language client and the server process behind it: discovery, start, restart with backoff
// after a crash, settings pushes, and the inline-completion middleware that reports what was shown.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as readline from 'node:readline';
import * as vscode from 'vscode';
import {
  CloseAction, DidChangeConfigurationNotification, ErrorAction, LanguageClient, LanguageClientOptions, State,
} from 'vscode-languageclient/node';
import { Backoff } from './backoff';
import { findServer } from './discovery';
import { EyasStatus, SHOWN_NOTIFICATION, STATUS_REQUEST } from './protocol';
import { serverLogLevel } from './serverLog';
import { EyasSettings, isEnabledFor, readSettings, SECTION, ServerSettings, toServerSettings } from './settings';
import type { ClientPhase } from './statusText';

export interface ShownSuggestion {
  document: vscode.TextDocument;
  position: vscode.Position;
  text: string;
}

export class ServerManager implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private generation = 0;   // bumped on every deliberate (re)start: stale crash handlers stand down
  private readonly backoff = new Backoff();
  private lastSent: ServerSettings | undefined;
  private readonly phaseEmitter = new vscode.EventEmitter<void>();
  private readonly shownEmitter = new vscode.EventEmitter<ShownSuggestion>();
  private readonly answeredEmitter = new vscode.EventEmitter<void>();
  phase: ClientPhase = 'starting';
  problem: string | undefined;
  readonly onDidChangePhase = this.phaseEmitter.event;
  /** Fires when completions were handed to the editor (the stable API cannot tell us when VS Code
   * actually displays them: handleDidShowCompletionItem is a proposed API). */
  readonly onDidShow = this.shownEmitter.event;
  /** Fires after every inline completion answer, empty ones included (new latency figures). */
  readonly onDidAnswer = this.answeredEmitter.event;

  constructor(private readonly output: vscode.LogOutputChannel) {}

  settings(): EyasSettings {
    const config = vscode.workspace.getConfiguration(SECTION);
    return readSettings((key) => config.get(key));
  }

  async start(): Promise<void> {
    const generation = ++this.generation;
    const config = vscode.workspace.getConfiguration(SECTION);
    const found = findServer({
      serverPath: config.get<string>('serverPath', ''),
      pythonPath: config.get<string>('pythonPath', ''),
      serverArgs: config.get<string[]>('serverArgs', []),
      workspaceFolders: (vscode.workspace.workspaceFolders ?? [])
        .filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath),
      pathEnv: process.env.PATH ?? '',
      home: os.homedir(),
      platform: process.platform,
      isExecutable,
    });
    if ('error' in found) {
      this.output.error(found.error);
      this.setPhase('missing', found.error);
      return;
    }
    this.output.info(`starting ${found.command} ${found.args.join(' ')} (from ${found.source})`);
    const client = new LanguageClient('eyas', 'Eyas', {
      command: found.command,
      args: found.args,
      options: { cwd: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath, env: process.env },
    }, this.clientOptions(generation));
    client.onDidChangeState((e) => {
      if (generation !== this.generation) return;
      if (e.newState === State.Running) {
        this.backoff.started(Date.now());
        this.setPhase('running');
      } else if (e.newState === State.Starting && this.phase !== 'restarting') {
        this.setPhase('starting');
      }
    });
    this.client = client;
    this.setPhase('starting');
    try {
      await client.start();
    } catch (error) {
      if (generation === this.generation) {
        this.output.error(`the server did not start: ${String(error)}`);
        this.setPhase('stopped', `the server did not start (${String(error)}); see the log`);
      }
    }
  }

  private clientOptions(generation: number): LanguageClientOptions {
    return {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.output,
      // stdout carries the protocol (only other transports would hand it here); stderr is the log
      stdioOptions: {
        stdout: (input, channel) => lines(input, (line) => channel.info(line)),
        stderr: (input, channel) => lines(input, (line) => channel[serverLogLevel(line)](line)),
      },
      // the first settings the server sees; a new process (after a crash) gets a fresh copy
      initializationOptions: () => {
        this.lastSent = toServerSettings(this.settings());
        return { [SECTION]: this.lastSent };
      },
      errorHandler: {
        error: (_error, _message, count) =>
          ({ action: (count ?? 1) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown }),
        closed: () => this.onClosed(generation),
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          if (!isEnabledFor(this.settings(), document.languageId)) return null;   // no round trip for switched-off languages
          const result = await next(document, position, context, token);
          this.answeredEmitter.fire();
          const items = Array.isArray(result) ? result : result?.items ?? [];
          const first = items[0];
          if (first && !token.isCancellationRequested) {
            const text = typeof first.insertText === 'string' ? first.insertText : first.insertText.value;
            this.notify(SHOWN_NOTIFICATION, { uri: this.uri(document.uri), length: text.length });
            this.shownEmitter.fire({ document, position, text });
          }
          return result;
        },
      },
    };
  }

  /** The process went away without being asked to: restart it after a growing delay. */
  private async onClosed(generation: number) {
    const stop = { action: CloseAction.DoNotRestart, handled: true } as const;
    if (generation !== this.generation) return stop;
    const delay = this.backoff.nextDelay(Date.now());
    if (delay === undefined) {
      const why = 'the server keeps exiting; fix the cause (see the log) and run "Eyas: Restart Server"';
      this.output.error(why);
      this.setPhase('stopped', why);
      void vscode.window.showErrorMessage(`Eyas: ${why}`, 'Show Log').then((pick) => {
        if (pick) this.output.show();
      });
      return stop;
    }
    this.output.warn(`the server exited; restarting it in ${delay / 1000} s`);
    this.setPhase('restarting');
    await new Promise((resolve) => setTimeout(resolve, delay));
    return generation === this.generation ? { action: CloseAction.Restart, handled: true } : stop;
  }

  async restart(): Promise<void> {
    this.backoff.reset();
    await this.stop();
    await this.start();
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.generation += 1;
    if (client) {
      try {
        await client.stop(3000);   // shutdown + exit; the process is killed if it does not comply
      } catch (error) {
        this.output.warn(`stopping the server: ${String(error)}`);
      }
    }
  }

  /** workspace/didChangeConfiguration with the mapped settings (the server merges them). */
  pushSettings(): void {
    if (!this.client?.isRunning()) return;
    this.lastSent = toServerSettings(this.settings(), this.lastSent);
    void this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: { [SECTION]: this.lastSent } });
  }

  async status(): Promise<EyasStatus | undefined> {
    if (!this.client?.isRunning()) return undefined;
    return this.client.sendRequest<EyasStatus>(STATUS_REQUEST, null);
  }

  notify(method: string, params: object): void {
    if (this.client?.isRunning()) {
      this.client.sendNotification(method, params).catch((error) => this.output.warn(`${method}: ${String(error)}`));
    }
  }

  /** The URI string the server knows the document by (the one sent in didOpen). */
  uri(uri: vscode.Uri): string {
    return this.client ? this.client.code2ProtocolConverter.asUri(uri) : uri.toString();
  }

  private setPhase(phase: ClientPhase, problem?: string): void {
    this.phase = phase;
    this.problem = problem;
    this.phaseEmitter.fire();
  }

  dispose(): void {
    void this.stop();
    this.phaseEmitter.dispose();
    this.shownEmitter.dispose();
    this.answeredEmitter.dispose();
  }
}

function lines(input: NodeJS.ReadableStream, each: (line: string) => void): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', each);
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
