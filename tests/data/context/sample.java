package demo;

import java.util.List;
import java.util.Map;

public class Greeter {
    private final String name;

    public Greeter(String name) {
        this.name = name;
    }

    public String greet(String other) {
        String prefix = "Hello";
        return prefix + ", " + name; // CURSOR
    }
}
