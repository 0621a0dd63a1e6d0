// For unit tests that fork: a failed check in the child ends it with the line number as a
// message, and the parent checks the exit code (Catch2 cannot report from a child).
#pragma once

#include <unistd.h>

#include <cstdio>

#define CHILD_CHECK(cond)                                                           \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      ::_exit(1);                                                                   \
    }                                                                               \
  } while (0)
