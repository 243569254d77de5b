// Entry point: wires the server manager, the status bar, the commands and the editor events.
import * as vscode from 'vscode';
import { PartialAcceptTracker } from './partialAccept';
import { PARTIAL_NOTIFICATION } from './protocol';
import { ServerManager } from './server';
import { PROCESS_KEYS, SECTION } from './settings';
import { StatusBar } from './statusBar';
import { summary } from './statusText';

let manager: ServerManager | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('Eyas', { log: true });
  const server = (manager = new ServerManager(output));
  const statusBar = new StatusBar(server);
  const partial = new PartialAcceptTracker();
  context.subscriptions.push(output, server, statusBar);

  context.subscriptions.push(
    server.onDidChangePhase(() => statusBar.refresh(0)),
    server.onDidShow(({ document, position, text }) => partial.shown(document.uri.toString(), position, text)),
    server.onDidAnswer(() => statusBar.refresh()),   // new latency figures
    vscode.workspace.onDidChangeTextDocument((e) => {
      const length = partial.edited(e.document.uri.toString(), e.contentChanges.map((c) => ({
        start: c.range.start, end: c.range.end, text: c.text,
      })));
      if (length > 0) server.notify(PARTIAL_NOTIFICATION, { uri: server.uri(e.document.uri), length });
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (!e.affectsConfiguration(SECTION)) return;
      if (PROCESS_KEYS.some((key) => e.affectsConfiguration(`${SECTION}.${key}`))) {
        void server.restart();   // a different binary or flags: only a new process can take them
      } else {
        server.pushSettings();
      }
      statusBar.refresh(0);
    }),
    vscode.commands.registerCommand('eyas.toggle', () => toggle()),
    vscode.commands.registerCommand('eyas.restartServer', () => server.restart()),
    vscode.commands.registerCommand('eyas.showLog', () => output.show()),
    vscode.commands.registerCommand('eyas.showStatus', () => showStatus(server, output)),
  );
  await server.start();
}

export async function deactivate(): Promise<void> {
  await manager?.stop();
}

/** Flips eyas.enable where it is set: a workspace that turned Eyas off is turned back on in the
 * workspace (a user-level change would be shadowed by the workspace value and do nothing). */
async function toggle(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const inWorkspace = config.inspect<boolean>('enable')?.workspaceValue !== undefined;
  await config.update('enable', !config.get<boolean>('enable', true),
    inWorkspace ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global);
}

/** Shows eyas/status: a summary in a notification, the whole JSON in the log. Returns the status so
 * that tests and other extensions can read it through executeCommand. */
async function showStatus(server: ServerManager, output: vscode.LogOutputChannel) {
  let status;
  try {
    status = await server.status();
  } catch (error) {
    void vscode.window.showErrorMessage(`Eyas: the status request failed: ${String(error)}`);
    return undefined;
  }
  if (!status) {
    void vscode.window.showWarningMessage(`Eyas: the server is not running${server.problem ? ` (${server.problem})` : ''}`);
    return undefined;
  }
  output.info(`eyas/status ${JSON.stringify(status)}`);
  void vscode.window.showInformationMessage(summary(status).replace(/\n/g, ' · '), 'Show Log').then((pick) => {
    if (pick) output.show();
  });
  return status;
}
