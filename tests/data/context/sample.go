package main

import (
	"fmt"
	"strings"
)

type Greeter struct {
	Name string
}

func (g *Greeter) Greet(other string) string {
	prefix := "Hello"
	return fmt.Sprintf("%s, %s", prefix, g.Name) // CURSOR
}

func helper(x int) int {
	return x + 1
}
