// The server logs to stderr (stdout is the protocol) without level names, and vscode-languageclient
// would file every stderr line as an error. Python tracebacks and exception lines are errors; the
// rest is the server's ordinary log. Pure, for unit tests.

export type LogLevel = 'info' | 'error';

export function serverLogLevel(line: string): LogLevel {
  if (/^Traceback \(most recent call last\)/.test(line) || /^\s+File "/.test(line) ||
      /^\s*[\w.]+(Error|Exception|Exit|Interrupt)\b(:|$)/.test(line) || /\bengine failed\b/.test(line)) {
    return 'error';
  }
  return 'info';
}
