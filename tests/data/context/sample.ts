import * as fs from "fs";
import { join } from "path";

interface Named {
  name: string;
}

export class Greeter implements Named {
  constructor(public name: string) {}

  greet(other?: string): string {
    const prefix: string = "Hello";
    return `${prefix}, ${this.name}`; // CURSOR
  }
}

type Pair = [number, number];

export function helper(x: number): number {
  return x + 1;
}
