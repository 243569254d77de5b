// The status bar item: model and engine, last latency and acceptance length, a spinner while the
// model loads. The server reports loading through work-done progress too, but that is drawn by
// vscode-languageclient itself; polling eyas/status while loading is simpler and also covers a
// server that restarts.
import * as vscode from 'vscode';
import type { EyasStatus } from './protocol';
import type { ServerManager } from './server';
import { statusView } from './statusText';

const LOADING_POLL_MS = 500;
const REFRESH_DEBOUNCE_MS = 250;

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('eyas.status', vscode.StatusBarAlignment.Right, 100);
  private timer: NodeJS.Timeout | undefined;
  private last: EyasStatus | undefined;

  constructor(private readonly server: ServerManager) {
    this.item.name = 'Eyas';
    this.item.command = 'eyas.toggle';
    this.render();
    this.item.show();
  }

  /** Ask the server again soon; several calls in a row (one per completion) make one request. */
  refresh(delayMs = REFRESH_DEBOUNCE_MS): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.poll(), delayMs);
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    try {
      this.last = this.server.phase === 'running' ? await this.server.status() : undefined;
    } catch {
      this.last = undefined;   // the server is going away; the phase change will say so
    }
    if (this.render().loading && this.server.phase !== 'missing' && this.server.phase !== 'stopped') {
      this.refresh(LOADING_POLL_MS);
    }
  }

  private render() {
    const view = statusView({
      enabled: this.server.settings().enable, phase: this.server.phase, status: this.last, problem: this.server.problem,
    });
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    return view;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.item.dispose();
  }
}
