#include <stdio.h>
#include "greeter.h"

struct greeter {
    const char *name;
};

int greet(struct greeter *g, char *out, int size)
{
    const char *prefix = "Hello";
    return snprintf(out, size, "%s, %s", prefix, g->name); // CURSOR
}

static int helper(int x) { return x + 1; }
