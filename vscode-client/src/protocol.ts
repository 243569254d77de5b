// The Eyas server contract as the client sees it (see lsp_server/server.py). Kept free of the
// `vscode` module so the pure modules and their tests can import it.

export const STATUS_REQUEST = 'eyas/status';
export const SHOWN_NOTIFICATION = 'eyas/shown';            // {uri, length}
export const PARTIAL_NOTIFICATION = 'eyas/partialAccept';  // {uri, length}
export const ACCEPT_COMMAND = 'eyas.accepted';             // the server's command on each item

export type EngineState = 'not loaded' | 'loading' | 'ready' | 'failed';

export interface Latency {
  total?: number;
  prefill?: number;
  decode?: number;
  [phase: string]: number | undefined;
}

/** The answer to `eyas/status`. */
export interface EyasStatus {
  state: EngineState;
  error: string | null;
  engine: string;
  model: string;
  draft: string | null;
  device: string | null;
  served: number;
  shown: number;
  accepted: number;
  partial: number;
  shown_chars: number;
  accepted_chars: number;
  acceptance_length: number | null;
  latency_ms: { last: Latency | null; p50_total: number | null; recent_totals: number[] };
}
