# stepsnap_bpf_skeleton(<name> SOURCE <file.bpf.c> [HEADERS <h>...] [CFLAGS <flag>...])
#
# Compiles a CO-RE BPF object with clang against a vmlinux.h dumped from the
# build machine's BTF, then generates <name>.skel.h with bpftool. Everything
# generated lives in the build tree. Defines an INTERFACE target <name>_skel
# whose include directory holds the skeleton.
find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
set(STEPSNAP_VMLINUX_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH
    "BTF of the kernel whose types vmlinux.h is generated from")

set(STEPSNAP_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf-gen)
file(MAKE_DIRECTORY ${STEPSNAP_BPF_GEN_DIR})
add_custom_command(
  OUTPUT ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h
  COMMAND ${BPFTOOL} btf dump file ${STEPSNAP_VMLINUX_BTF} format c
          > ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h.tmp
          ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h
  COMMENT "Generating vmlinux.h from ${STEPSNAP_VMLINUX_BTF}"
  VERBATIM)
add_custom_target(stepsnap_vmlinux_h DEPENDS ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h)

function(stepsnap_bpf_skeleton name)
  cmake_parse_arguments(ARG "" "SOURCE" "HEADERS;CFLAGS" ${ARGN})
  get_filename_component(src ${ARG_SOURCE} ABSOLUTE)
  get_filename_component(src_dir ${src} DIRECTORY)
  set(obj ${STEPSNAP_BPF_GEN_DIR}/${name}.bpf.o)
  set(skel ${STEPSNAP_BPF_GEN_DIR}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86 ${ARG_CFLAGS}
            -Wall -Werror -I${STEPSNAP_BPF_GEN_DIR} -I${src_dir}
            -c ${src} -o ${obj}
    DEPENDS ${src} ${ARG_HEADERS} ${STEPSNAP_BPF_GEN_DIR}/vmlinux.h
    COMMENT "Compiling BPF object ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${STEPSNAP_BPF_GEN_DIR})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
