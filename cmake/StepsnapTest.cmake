# stepsnap_test(<name> LABEL unit|host|vm [LABEL ...] SOURCES ... LIBS ... [TIMEOUT s])
#
# One GoogleTest binary; every TEST in it becomes a ctest test carrying the
# given labels:
#   unit  no privileges, no kernel features
#   host  root and the running kernel (BPF, namespaces, cgroups)
#   vm    needs device-mapper: runs inside the scripts/vm guest
# A binary given several labels is registered once per label, with the label
# as the test-name prefix, so the same BPF tests run on the host kernel and
# again on the guest's kernel.
include(GoogleTest)

function(stepsnap_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABEL;SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  # Tests see their shared helpers as "tests/...", and of the product only
  # the modules they link.
  stepsnap_module_root(tests_root stepsnap_tests tests)
  target_include_directories(${name} PRIVATE ${tests_root})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  foreach(label IN LISTS ARG_LABEL)
    # PRE_TEST discovery: listing happens when ctest runs, so a binary that
    # cannot run on the build host (vm tests) still builds.
    gtest_discover_tests(${name}
      TEST_PREFIX "${label}."
      DISCOVERY_MODE PRE_TEST
      # Listing runs the binary; under emulation on a loaded machine a
      # binary with big shared libraries (gRPC) takes longer than the
      # default 5 s just to start.
      DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS ${label} TIMEOUT ${ARG_TIMEOUT})
  endforeach()
endfunction()
