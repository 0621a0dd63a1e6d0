// Which sanitizer this translation unit is built with (scripts/test --sanitize, --tsan):
// SMCPRE_ASAN and SMCPRE_TSAN are 1 or 0, for GCC and clang alike.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define SMCPRE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SMCPRE_ASAN 1
#endif
#endif
#ifndef SMCPRE_ASAN
#define SMCPRE_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define SMCPRE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SMCPRE_TSAN 1
#endif
#endif
#ifndef SMCPRE_TSAN
#define SMCPRE_TSAN 0
#endif
