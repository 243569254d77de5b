import fs from "fs";
import { join } from "path";

export class Greeter {
  constructor(name) {
    this.name = name;
  }

  greet(other) {
    const prefix = "Hello";
    return `${prefix}, ${this.name}`; // CURSOR
  }
}

const helper = (x) => {
  return x + 1;
};

function plain(a, b) {
  return a * b;
}
