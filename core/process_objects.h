// Every process-wide object of the engine, in one table (doc/design.md §5): what a fork
// child does with it and what the process does with it at exit, in one order. A
// process-wide object gets its entry here; test_process_objects fails on a fork reset or
// exit step that is not in the table.
#pragma once

#include <span>

namespace smcpre::core {

struct ProcessObject {
  const char* name;
  // In a fork child: the parent's object (its threads are gone, its locks may have been
  // copied held) is abandoned, and the child makes its own on first use. Null: nothing.
  void (*reset_in_fork_child)();
  // At exit (the library's destructor). Null: nothing.
  void (*at_exit)();
};

// The table, in the order both passes run it.
std::span<const ProcessObject> process_objects();

// Engine::after_fork_in_child and Engine::at_exit: every entry, in table order.
void reset_process_objects_in_fork_child();
void run_process_objects_at_exit();

}  // namespace smcpre::core
