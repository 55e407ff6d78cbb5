// toml_read.cpp — cli/toml_read.h over toml++ (Debian 12: libtomlplusplus-dev, shared
// libtomlplusplus3): parse a file, flatten its top-level keys into C structs. The only C++ in
// the `serval` program; no exception leaves this file.
#include "toml_read.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <toml++/toml.h>

namespace {

char *dup_str(const std::string &s)
{
    char *p = static_cast<char *>(std::malloc(s.size() + 1));
    if (p) std::memcpy(p, s.c_str(), s.size() + 1);
    return p;
}

// The scalar's text, or false for a non-scalar (array, table, date/time).
bool scalar_text(const toml::node &n, cli_toml_type *type, std::string *out)
{
    if (auto s = n.as_string()) {
        *type = CLI_TOML_STRING;
        *out = s->get();
    } else if (auto i = n.as_integer()) {
        *type = CLI_TOML_INT;
        *out = std::to_string(i->get());
    } else if (auto f = n.as_floating_point()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.17g", f->get());
        *type = CLI_TOML_FLOAT;
        *out = buf;
    } else if (auto b = n.as_boolean()) {
        *type = CLI_TOML_BOOL;
        *out = b->get() ? "true" : "false";
    } else {
        return false;
    }
    return true;
}

bool fill_entry(const std::string &key, const toml::node &n, cli_toml_entry *e)
{
    e->key = dup_str(key);
    e->line = static_cast<int>(n.source().begin.line);
    if (!e->key) return false;
    std::string text;
    if (scalar_text(n, &e->type, &text)) return (e->text = dup_str(text)) != nullptr;
    if (auto a = n.as_array()) {
        e->type = CLI_TOML_ARRAY;
        e->all_strings = true;
        e->items = static_cast<char **>(std::calloc(a->size() ? a->size() : 1, sizeof(char *)));
        if (!e->items) return false;
        for (const toml::node &item : *a) {
            cli_toml_type t;
            if (!scalar_text(item, &t, &text)) text = "?";
            if (t != CLI_TOML_STRING) e->all_strings = false;
            if (!(e->items[e->n_items++] = dup_str(text))) return false;
        }
        return true;
    }
    e->type = n.is_table() ? CLI_TOML_TABLE : CLI_TOML_OTHER;
    return true;
}

} // namespace

extern "C" bool cli_toml_read(const char *path, cli_toml_doc **out, char *err, size_t cap)
{
    *out = nullptr;
    cli_toml_doc *d = nullptr;
    try {
        toml::table tbl = toml::parse_file(path);
        d = static_cast<cli_toml_doc *>(std::calloc(1, sizeof *d));
        if (!d) throw std::bad_alloc();
        d->entries = static_cast<cli_toml_entry *>(
            std::calloc(tbl.size() ? tbl.size() : 1, sizeof(cli_toml_entry)));
        if (!d->entries) throw std::bad_alloc();
        for (auto &&kv : tbl) {
            cli_toml_entry *e = &d->entries[d->n++];
            if (!fill_entry(std::string(kv.first.str()), kv.second, e)) throw std::bad_alloc();
        }
        *out = d;
        return true;
    } catch (const toml::parse_error &e) {
        std::snprintf(err, cap, "%s:%u:%u: %.*s", path, (unsigned)e.source().begin.line,
                      (unsigned)e.source().begin.column, (int)e.description().size(),
                      e.description().data());
    } catch (const std::exception &e) {
        std::snprintf(err, cap, "%s: %s", path, e.what());
    } catch (...) {
        std::snprintf(err, cap, "%s: cannot be read", path);
    }
    cli_toml_doc_free(d);
    return false;
}

extern "C" void cli_toml_doc_free(cli_toml_doc *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        cli_toml_entry *e = &d->entries[i];
        std::free(e->key);
        std::free(e->text);
        for (size_t j = 0; j < e->n_items; j++) std::free(e->items[j]);
        std::free(e->items);
    }
    std::free(d->entries);
    std::free(d);
}
