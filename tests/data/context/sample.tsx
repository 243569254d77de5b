import React from "react";
import { useState } from "react";

export class Greeter extends React.Component<{ name: string }> {
  greet(other?: string): JSX.Element {
    const prefix = "Hello";
    return <div>{prefix}, {this.props.name}</div>; // CURSOR
  }
}

export function Counter(): JSX.Element {
  const [n, setN] = useState(0);
  return <button onClick={() => setN(n + 1)}>{n}</button>;
}
