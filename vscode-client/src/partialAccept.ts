// VS Code's stable API has no hook for "the user accepted part of a suggestion" (the
// handleDidPartiallyAcceptCompletionItem hook is a proposed API), so partial accepts are inferred
// from the edit they make: an insertion at the suggestion's position of a strict prefix of it.
// Pure: positions and edits come in as plain values.

export interface Point {
  line: number;
  character: number;
}

export interface Edit {
  start: Point;
  end: Point;
  text: string;
}

interface Pending {
  uri: string;
  at: Point;
  rest: string;   // what is still shown after the text the user already took
}

export class PartialAcceptTracker {
  private pending: Pending | undefined;

  /** A suggestion was handed to the editor at `at`. */
  shown(uri: string, at: Point, text: string): void {
    this.pending = text ? { uri, at, rest: text } : undefined;
  }

  /**
   * A document changed: the characters to report as partially accepted, or 0. A one-character
   * insertion that matches is the user typing through the suggestion (VS Code keeps showing the
   * rest), not an accept; an insertion of all that remains is the full accept, which the item's
   * own command reports.
   */
  edited(uri: string, edits: readonly Edit[]): number {
    const p = this.pending;
    if (!p || p.uri !== uri) return 0;
    const e = edits.length === 1 ? edits[0] : undefined;
    const insertsAtCursor = e !== undefined && same(e.start, p.at) && same(e.end, p.at) && e.text.length > 0;
    if (!insertsAtCursor || !p.rest.startsWith(e.text) || e.text.length === p.rest.length) {
      this.pending = undefined;
      return 0;
    }
    p.rest = p.rest.slice(e.text.length);
    p.at = after(p.at, e.text);
    return e.text.length >= 2 ? e.text.length : 0;
  }
}

function same(a: Point, b: Point): boolean {
  return a.line === b.line && a.character === b.character;
}

/** The position after inserting `text` at `at`. */
export function after(at: Point, text: string): Point {
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length === 1) return { line: at.line, character: at.character + text.length };
  return { line: at.line + lines.length - 1, character: lines[lines.length - 1].length };
}
