// The settings table: every SMCPRE_* variable smcpre knows, with the parser of its value.
// The environment's variables and the policy file's settings go through the same table,
// so a value means the same wherever it is given (config.h merges the two).
#pragma once

#include <string>
#include <string_view>

#include "config/config_types.h"

namespace smcpre::config {

// Every variable's name starts with it; the environment's other names are not ours.
inline constexpr std::string_view kVariablePrefix = "SMCPRE_";

// One variable: its name and the parser of its value, which sets the variable's fields of
// `c` and returns "", or returns what was expected and leaves `c` as it was.
struct Variable {
  std::string_view name;
  std::string (*parse)(std::string_view value, Config& c);
};

// The variable called `name` (SMCPRE_ included), or nullptr if smcpre knows none.
const Variable* find_variable(std::string_view name);

// SMCPRE_CONFIG's syntax: "" or what was expected. It sets no field of Config: load()
// reads the file it names, and checks it first with this.
std::string check_config_path(std::string_view value);

}  // namespace smcpre::config
