# Packaging.cmake — what `cmake --install` puts where (beside the binaries' own install() rules
# in cli/ and bench/) and the Debian package CPack builds from it (`cpack -G DEB` in the build
# directory; docs/DEPLOY.md). Installed: bin/serval and bin/serval-bench, share/serval/
# serval.proto and serval.toml (the example), a manual page per command (share/man/man1, made
# by the build from the flag tables: cmake/ServalMan.cmake), the systemd unit and
# /etc/serval/serval.toml (cmake/ServalInstall.cmake). The package adds the `serval` user,
# /var/lib/serval and a token file in its maintainer scripts (packaging/).
include(GNUInstallDirs)

install(FILES ${CMAKE_SOURCE_DIR}/proto/serval.proto ${CMAKE_SOURCE_DIR}/docs/serval.toml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/serval)

# Manual pages: written after serval is built, by serval itself (so a page cannot drift from
# --help); the stamp lists the pages written.
set(SERVAL_MAN_DIR ${CMAKE_BINARY_DIR}/man)
# serval-bench writes its --help by hand (bench/serval_bench/main.c, its one owner): its page
# is help2man's rendering of that text, when help2man is installed.
set(SERVAL_MAN_BENCH "")
set(SERVAL_MAN_DEPENDS serval)
find_program(HELP2MAN help2man)
if(HELP2MAN)
  set(SERVAL_MAN_BENCH -DHELP2MAN=${HELP2MAN} -DVERSION=${PROJECT_VERSION})
endif()
if(TARGET serval-bench AND HELP2MAN)
  list(APPEND SERVAL_MAN_BENCH -DBENCH=$<TARGET_FILE:serval-bench>)
  list(APPEND SERVAL_MAN_DEPENDS serval-bench)
endif()
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/man.stamp
  COMMAND ${CMAKE_COMMAND} -DSERVAL=$<TARGET_FILE:serval> -DOUT=${SERVAL_MAN_DIR}
          ${SERVAL_MAN_BENCH}
          -DSTAMP=${CMAKE_BINARY_DIR}/man.stamp -P ${CMAKE_SOURCE_DIR}/cmake/ServalMan.cmake
  DEPENDS ${SERVAL_MAN_DEPENDS} ${CMAKE_SOURCE_DIR}/cmake/ServalMan.cmake
  COMMENT "Writing the manual pages (serval help-man)")
add_custom_target(serval_man ALL DEPENDS ${CMAKE_BINARY_DIR}/man.stamp)
install(DIRECTORY ${SERVAL_MAN_DIR}/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

install(CODE "set(SERVAL_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
set(SERVAL_BINARY_DIR \"${CMAKE_BINARY_DIR}\")
set(SERVAL_VERSION \"${PROJECT_VERSION}\")")
install(SCRIPT ${CMAKE_SOURCE_DIR}/cmake/ServalInstall.cmake)

# ---- the Debian package ------------------------------------------------------------------
if(SERVAL_NATIVE)
  message(STATUS "serval: a package built from this tree runs only on CPUs like this one "
                 "(SERVAL_NATIVE=ON, -march=native): configure with -DSERVAL_NATIVE=OFF to ship it")
endif()
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME serval)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Serval maintainers <serval@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "self-hosted code-completion inference server")
# The extended description (CPack puts the summary above it), wrapped under 80 columns.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "Serval serves code completions and chat from a GGUF model over gRPC and
HTTP (the Tabby, OpenAI and llama.cpp routes), on CPUs and NVIDIA GPUs.
This package runs it as a systemd service under its own user, with its
settings in /etc/serval/serval.toml and its data in /var/lib/serval.
The model is not included.")
set(CPACK_SET_DESTDIR ON) # absolute destinations (/etc/serval) and the prefix both honoured
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/serval-project/serval")
# Library dependencies come from the binaries (dpkg-shlibdeps: Debian's package names and
# versions for what they link); adduser is the maintainer scripts'. Libraries no Debian package
# owns (NVIDIA's CUDA runtime and cuBLAS in a CUDA build) are not declared: see docs/DEPLOY.md.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_SOURCE_DIR}/packaging/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/postinst ${CMAKE_SOURCE_DIR}/packaging/prerm
    ${CMAKE_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)

# tests/tools/test_package.sh: builds the package from this tree and checks it (label package:
# tens of seconds, mostly lintian; `ctest -L package`).
if(BUILD_TESTING AND SERVAL_TESTS STREQUAL "ON")
  add_test(NAME test_package COMMAND sh ${CMAKE_SOURCE_DIR}/tests/tools/test_package.sh
           ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
  set_tests_properties(test_package PROPERTIES LABELS package TIMEOUT 300)
endif()
