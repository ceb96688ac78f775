# stepsnap_module(<target> SOURCES <file>... [USES <target>...] [PRIVATE_USES <target>...])
#
# One folder, one library: the folder this is called from becomes a static
# library whose headers other code includes by their path from the
# repository root ("agent/catalog/catalog.h").
#
# The build enforces the layering. No target sees the repository root on its
# include path. Instead each module gets an include directory of its own,
# ${CMAKE_BINARY_DIR}/modules/<target>, holding one symlink,
# <folder> -> the source folder, and exports it PUBLIC. A file therefore
# finds a header only of its own module or of a module it USES (directly or
# through a PUBLIC chain): an #include that runs against the declared
# arrows is "No such file or directory" at compile time, not a review note.
function(stepsnap_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;USES;PRIVATE_USES" ${ARGN})
  file(RELATIVE_PATH folder ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  stepsnap_module_root(root ${name} ${folder})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${root})
  target_link_libraries(${name} PUBLIC ${ARG_USES} PRIVATE ${ARG_PRIVATE_USES})
endfunction()

# Makes ${CMAKE_BINARY_DIR}/modules/<name>/<folder> a symlink to the source
# folder and returns the include root in <out>.
function(stepsnap_module_root out name folder)
  set(root ${CMAKE_BINARY_DIR}/modules/${name})
  set(link ${root}/${folder})
  get_filename_component(parent ${link} DIRECTORY)
  file(MAKE_DIRECTORY ${parent})
  if(NOT IS_SYMLINK ${link})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${folder} ${link} SYMBOLIC)
  endif()
  set(${out} ${root} PARENT_SCOPE)
endfunction()
