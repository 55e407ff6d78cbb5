/* cpuinfo.c — the CPU's model name from /proc/cpuinfo (see cpuinfo.h). */
#include "cpuinfo.h"

#include <stdio.h>
#include <string.h>

bool eng_cpuinfo_model_name(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return false;
    bool found = false;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ')
                    c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, cap, "%s", c);
                found = true;
            }
            break;
        }
    }
    fclose(f);
    return found;
}
