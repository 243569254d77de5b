#include <string>
#include <vector>

namespace demo {

class Greeter {
public:
    explicit Greeter(std::string name) : name_(name) {}

    std::string greet(const std::string &other) const {
        std::string prefix = "Hello";
        return prefix + ", " + name_; // CURSOR
    }

private:
    std::string name_;
};

}  // namespace demo
