// What the status bar item and `Eyas: Show Status` say. Pure, for unit tests.
import type { EyasStatus } from './protocol';

/** Where the client is, independent of what the server reports. */
export type ClientPhase = 'starting' | 'running' | 'restarting' | 'stopped' | 'missing';

export interface StatusInput {
  enabled: boolean;
  phase: ClientPhase;
  status?: EyasStatus;   // the last eyas/status answer, if any
  problem?: string;      // why the server is missing or stopped
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** true while the model loads: the caller polls eyas/status until it is ready. */
  loading: boolean;
}

export function statusView(input: StatusInput): StatusView {
  const { status } = input;
  const click = input.enabled ? 'Click to turn completions off.' : 'Click to turn completions on.';
  if (input.phase === 'missing' || input.phase === 'stopped') {
    return { text: '$(warning) Eyas', tooltip: `Eyas: ${input.problem ?? 'the server is not running'}`, loading: false };
  }
  if (input.phase === 'starting' || input.phase === 'restarting' || !status ||
      status.state === 'not loaded' || status.state === 'loading') {
    const what = input.phase === 'restarting' ? 'restarting the server' : 'loading the model';
    return { text: '$(sync~spin) Eyas', tooltip: `Eyas: ${what}… ${click}`, loading: true };
  }
  if (status.state === 'failed') {
    return { text: '$(error) Eyas', tooltip: `Eyas: the model failed to load: ${status.error ?? 'unknown error'}`, loading: false };
  }
  const parts = [`${shortModel(status.model)} · ${status.engine}`];
  const last = status.latency_ms.last?.total;
  if (last !== undefined && last !== null) parts.push(`${Math.round(last)} ms`);
  // acceptance length (tokens per target step) only means something with a drafter; plain decoding reports 1
  if (status.acceptance_length !== null && status.draft && status.draft !== 'none') {
    parts.push(`acc ${status.acceptance_length.toFixed(2)}`);
  }
  const icon = input.enabled ? '$(sparkle)' : '$(circle-slash)';
  return { text: `${icon} ${input.enabled ? parts.join(' · ') : 'Eyas off'}`, tooltip: `${summary(status)}\n${click}`, loading: false };
}

/** "pocket" for ".../models/pocket", "Qwen3-0.6B" for "Qwen/Qwen3-0.6B": paths are too long for a status bar. */
export function shortModel(model: string): string {
  const parts = model.split(/[\\/]/).filter((p) => p.length > 0);
  return parts.length > 0 ? parts[parts.length - 1] : model;
}

/** One line per fact; also what the status command shows, so the wording must stay parseable. */
export function summary(s: EyasStatus): string {
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? 'n/a' : `${Math.round(v)} ms`);
  const last = s.latency_ms.last;
  return [
    `Eyas: ${s.state}${s.error ? ` (${s.error})` : ''}`,
    `model ${s.model}, engine ${s.engine}, draft ${s.draft ?? 'default'}, device ${s.device ?? 'default'}`,
    `served ${s.served}, shown ${s.shown}, accepted ${s.accepted} (${s.accepted_chars} chars), partial ${s.partial}`,
    `latency last ${ms(last?.total)} (prefill ${ms(last?.prefill)}, decode ${ms(last?.decode)}), p50 ${ms(s.latency_ms.p50_total)}`,
    `acceptance length ${s.acceptance_length === null ? 'n/a' : s.acceptance_length.toFixed(2)}`,
  ].join('\n');
}
