# ServalMan.cmake — writes the manual pages of the `serval` commands (a build step, cmake -P):
# serval.1 and serval-COMMAND.1 for every command `serval help-man --list` names, each printed
# by `serval help-man [COMMAND]` from the command's own flag table (cli/man.c), then gzip -9n as
# Debian installs them. In: SERVAL (the binary), OUT (a directory, emptied first), STAMP; and
# optionally HELP2MAN and VERSION: serval-bench's page (BENCH, its own --help text) and the
# page of a command that does not parse through cli/flags.h, from its --help.
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
execute_process(COMMAND "${SERVAL}" help-man --list OUTPUT_VARIABLE names RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  # A binary that cannot run here (a sanitizer or cross build) must not fail everyone's build:
  # no pages, a warning, and tests/tools/test_package.sh reports the missing pages.
  message(WARNING "${SERVAL} help-man --list failed (${rc}): no manual pages written")
  file(WRITE "${STAMP}" "\n")
  return()
endif()
string(REGEX REPLACE "\n$" "" names "${names}")
string(REPLACE "\n" ";" names "${names}")
find_program(GZIP gzip)
set(pages "")
foreach(page IN ITEMS "" ${names})
  if(page STREQUAL "")
    set(file "serval.1")
  else()
    set(file "serval-${page}.1")
  endif()
  execute_process(COMMAND "${SERVAL}" help-man ${page} OUTPUT_FILE "${OUT}/${file}"
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  file(SIZE "${OUT}/${file}" size)
  if(NOT rc EQUAL 0 OR size EQUAL 0)
    # A command that parses its own argv instead of through cli/flags.h does not answer
    # --help-man: its page is help2man's rendering of its --help, when help2man is installed.
    file(REMOVE "${OUT}/${file}")
    if(HELP2MAN AND NOT page STREQUAL "")
      set(wrapper "${OUT}/.help2man/serval-${page}") # help2man names the page after it
      file(WRITE "${wrapper}" "#!/bin/sh\nexec \"${SERVAL}\" ${page} \"$@\"\n")
      file(CHMOD "${wrapper}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
      execute_process(COMMAND "${HELP2MAN}" --no-info --no-discard-stderr --section=1
                      "--name=the serval ${page} command" "--version-string=${VERSION}"
                      -o "${OUT}/${file}" "${wrapper}" RESULT_VARIABLE rc2 ERROR_QUIET)
      file(REMOVE_RECURSE "${OUT}/.help2man")
    endif()
    if(NOT EXISTS "${OUT}/${file}")
      message(WARNING "serval help-man ${page}: no manual page (exit ${rc}): ${err}")
      continue()
    endif()
    message(WARNING "serval ${page} does not parse with cli/flags.h (help-man: ${err}); its "
                    "page is help2man's rendering of its --help")
  endif()
  if(GZIP)
    execute_process(COMMAND "${GZIP}" -9nf "${OUT}/${file}" RESULT_VARIABLE rc)
  endif()
  list(APPEND pages "${file}")
endforeach()
# serval-bench (optional: BENCH, HELP2MAN, VERSION): help2man's page from its --help.
if(BENCH AND HELP2MAN)
  execute_process(COMMAND "${HELP2MAN}" --no-info --no-discard-stderr --section=1
                  "--name=load generator for code-completion servers"
                  "--version-string=${VERSION}" -o "${OUT}/serval-bench.1" "${BENCH}"
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(rc EQUAL 0)
    if(GZIP)
      execute_process(COMMAND "${GZIP}" -9nf "${OUT}/serval-bench.1")
    endif()
    list(APPEND pages "serval-bench.1")
  else()
    message(WARNING "help2man serval-bench: no manual page: ${err}")
  endif()
endif()
file(WRITE "${STAMP}" "${pages}\n")
