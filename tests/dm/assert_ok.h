// ASSERT_OK(expr): evaluates a Result, fails the test with the error's
// message (operation, device, errno text) when it holds one, and otherwise
// yields it, so `auto id = ASSERT_OK(pool.create_thin()).value();` reads as
// the step it is.
#pragma once

#include <gtest/gtest.h>

#include <utility>

#define ASSERT_OK(expr)                                                                \
  ({                                                                                   \
    auto ok_result_ = (expr);                                                          \
    ASSERT_TRUE(ok_result_.has_value()) << #expr ": " << ok_result_.error().message(); \
    std::move(ok_result_);                                                             \
  })
