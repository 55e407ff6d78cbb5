/* prompt_impl.h — private pieces shared by prompt.c and prompt_lang.c. */
#ifndef SERVAL_PROMPT_IMPL_H
#define SERVAL_PROMPT_IMPL_H

#include "prompt.h"

/* NULL-terminated top-level keywords of a language, or NULL when it is unknown. */
const char *const *prompt_language_keywords(const char *language);

#endif
