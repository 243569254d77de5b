// The `eyas.*` settings and what the server receives for them ({"eyas": {...}} in
// initializationOptions and workspace/didChangeConfiguration). Pure, for unit tests.

export const SECTION = 'eyas';
export const ENGINES = ['torch', 'daemon', 'vllm', 'openai'] as const;
export const MULTILINE_MODES = ['auto', 'always', 'never'] as const;

export interface EyasSettings {
  enable: boolean;
  enableByLanguage: Record<string, boolean>;
  engine: string;
  url: string;
  apiKeyEnv: string;
  model: string;
  draft: string;
  device: string;
  precision: string;
  speculativeK: number | null;
  maxTokens: number;
  temperature: number;
  topP: number;
  requestTimeout: number;
  multiline: string;
  multilineByLanguage: Record<string, string>;
  cache: boolean;
  prefetch: boolean;
}

/** The server's keys (lsp_server/config.py). null clears a value back to the server's default. */
export interface ServerSettings {
  engine: string;
  url?: string | null;
  apiKeyEnv?: string | null;
  model?: string | null;
  draft?: string | null;
  device?: string | null;
  precision?: string | null;
  speculativeK?: number | null;
  maxTokens: number;
  temperature: number;
  topP: number;
  requestTimeout: number;
  enable: Record<string, boolean>;
  multiline: Record<string, string>;
  cache: boolean;
  prefetch: boolean;
}

export const DEFAULTS: EyasSettings = {
  enable: true, enableByLanguage: {}, engine: 'torch', url: '', apiKeyEnv: '', model: '', draft: '',
  device: '', precision: '', speculativeK: null, maxTokens: 64, temperature: 0, topP: 1, requestTimeout: 20,
  multiline: 'auto', multilineByLanguage: {}, cache: true, prefetch: true,
};

/** Reads every setting through `get` (WorkspaceConfiguration.get in the extension). Values of the
 * wrong type fall back to the default here; range checks are the server's (it logs what it refuses). */
export function readSettings(get: (key: string) => unknown): EyasSettings {
  const out: Record<string, unknown> = {};
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    const value = get(key);
    out[key] = sameShape(value, fallback) ? value : fallback;
  }
  const s = out as unknown as EyasSettings;
  s.enableByLanguage = pick(s.enableByLanguage, (v) => typeof v === 'boolean');
  s.multilineByLanguage = pick(s.multilineByLanguage, (v) => (MULTILINE_MODES as readonly unknown[]).includes(v));
  return s;
}

function sameShape(value: unknown, fallback: unknown): boolean {
  if (value === undefined) return false;
  if (fallback === null) return value === null || typeof value === 'number';   // speculativeK
  if (typeof fallback === 'object') return typeof value === 'object' && value !== null && !Array.isArray(value);
  return typeof value === typeof fallback;
}

function pick<T>(map: Record<string, unknown>, ok: (v: unknown) => boolean): Record<string, T> {
  return Object.fromEntries(Object.entries(map).filter(([, v]) => ok(v))) as Record<string, T>;
}

/** Client-side check before asking the server: disabled languages cost no round trip. */
export function isEnabledFor(s: EyasSettings, languageId: string): boolean {
  return s.enable && (s.enableByLanguage[languageId] ?? s.enableByLanguage['*'] ?? true);
}

/**
 * What the server gets. `previous` is what it got last time, because the server merges:
 *  - per-language maps merge into what it has, so a language removed from a map is sent again with
 *    the map's new default ("*"), or the server would keep the stale value;
 *  - a cleared string (model, url, ...) is sent as null only if something was sent before; on the
 *    first send it is left out so that flags given in eyas.serverArgs stay in force.
 */
export function toServerSettings(s: EyasSettings, previous?: ServerSettings): ServerSettings {
  const enableDefault = s.enable && (s.enableByLanguage['*'] ?? true);
  const enable: Record<string, boolean> = { '*': enableDefault };
  for (const [lang, on] of Object.entries(s.enableByLanguage)) {
    enable[lang] = s.enable && on;   // the global switch beats any language
  }
  const multilineDefault = s.multilineByLanguage['*'] ?? s.multiline;
  const multiline: Record<string, string> = { ...s.multilineByLanguage, '*': multilineDefault };
  for (const lang of Object.keys(previous?.enable ?? {})) enable[lang] ??= enableDefault;
  for (const lang of Object.keys(previous?.multiline ?? {})) multiline[lang] ??= multilineDefault;

  const out: ServerSettings = {
    engine: s.engine, maxTokens: s.maxTokens, temperature: s.temperature, topP: s.topP,
    requestTimeout: s.requestTimeout, enable, multiline, cache: s.cache, prefetch: s.prefetch,
  };
  const optional = {
    url: s.url || null, apiKeyEnv: s.apiKeyEnv || null, model: s.model || null, draft: s.draft || null,
    device: s.device || null, precision: s.precision || null, speculativeK: s.speculativeK,
  };
  for (const [key, value] of Object.entries(optional) as [keyof typeof optional, string | number | null][]) {
    if (value !== null || (previous?.[key] ?? null) !== null) {
      (out as unknown as Record<string, unknown>)[key] = value;
    }
  }
  return out;
}

/** The settings that decide how the server process is started: a change restarts it. */
export const PROCESS_KEYS = ['serverPath', 'pythonPath', 'serverArgs'];
