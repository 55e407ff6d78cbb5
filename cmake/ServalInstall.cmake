# ServalInstall.cmake — the install steps that depend on where Serval is installed, run by
# `cmake --install` and CPack (install(SCRIPT) in cmake/Packaging.cmake), with the install-time
# CMAKE_INSTALL_PREFIX: the systemd unit written with this prefix's path to serval, into
# PREFIX/lib/systemd/system (/lib/systemd/system for /usr, where Debian 12 keeps units), and
# the example config /etc/serval/serval.toml (the path `serval serve` reads), which an existing
# one is never overwritten by; share/doc/serval/copyright and changelog.gz (as Debian keeps
# them). In: SERVAL_SOURCE_DIR, SERVAL_BINARY_DIR, SERVAL_VERSION.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(unitdir "/lib/systemd/system")
else()
  set(unitdir "${prefix}/lib/systemd/system")
endif()
set(SERVAL_BINDIR "${prefix}/bin")
configure_file("${SERVAL_SOURCE_DIR}/packaging/serval.service.in"
               "${SERVAL_BINARY_DIR}/packaging/serval.service" @ONLY)
file(INSTALL "${SERVAL_BINARY_DIR}/packaging/serval.service" DESTINATION "${unitdir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# file(INSTALL) puts $DESTDIR in front of its destination itself; EXISTS needs it spelt out.
set(conf "$ENV{DESTDIR}/etc/serval/serval.toml")
if(EXISTS "${conf}")
  message(STATUS "Kept: ${conf} (the new example is ${prefix}/share/serval/serval.toml)")
else()
  file(INSTALL "${SERVAL_SOURCE_DIR}/docs/serval.toml" DESTINATION "/etc/serval"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()

set(PROJECT_VERSION "${SERVAL_VERSION}")
configure_file("${SERVAL_SOURCE_DIR}/packaging/changelog.in" "${SERVAL_BINARY_DIR}/packaging/changelog" @ONLY)
find_program(GZIP gzip)
if(GZIP)
  execute_process(COMMAND "${GZIP}" -9nf "${SERVAL_BINARY_DIR}/packaging/changelog")
  set(changelog "${SERVAL_BINARY_DIR}/packaging/changelog.gz")
else()
  set(changelog "${SERVAL_BINARY_DIR}/packaging/changelog")
endif()
file(INSTALL "${SERVAL_SOURCE_DIR}/packaging/copyright" "${changelog}"
     DESTINATION "${prefix}/share/doc/serval"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
