/*
 * proto/envelope.c - envelope defaults and the validity checks for names and UTF-8 text.
 *
 * These checks run on every string of every request, so they are written for speed: names use a
 * 256-entry class table, UTF-8 skips ASCII eight bytes at a time before decoding sequences.
 */
#include <string.h>

#include "proto/codec_int.h"
#include "proto/envelope.h"

/* proto_name_class[c] is 1 when c may appear in a name: [a-z0-9._-]. Shared with the codec. */
const unsigned char proto_name_class[256] = {
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['.'] = 1, ['_'] = 1, ['-'] = 1,
};

void hsb_envelope_init(hsb_envelope *env)
{
    memset(env, 0, sizeof(*env));
    env->prio = HSB_PRIO_NORMAL;
}

bool hsb_name_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > HSB_NAME_MAX) {
        return false;
    }
    for (i = 0; i < len; i++) {
        if (!proto_name_class[(unsigned char)s[i]]) {
            return false;
        }
    }
    return true;
}

bool hsb_pattern_valid(const char *s, size_t len)
{
    if (len > 2 && s[len - 2] == '.' && s[len - 1] == '*') {
        return hsb_name_valid(s, len - 2);
    }
    return hsb_name_valid(s, len);
}

bool hsb_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        /* ASCII fast path: eight bytes at a time while none has its high bit set. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) {
                break;
            }
            i += 8;
        }
        if (i >= len) {
            break;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            /* Two bytes; 0xc0 and 0xc1 would be overlong. */
            if (i + 1 >= len || (s[i + 1] & 0xc0) != 0x80) {
                return false;
            }
            i += 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            if (i + 2 >= len || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80) {
                return false;
            }
            if (c == 0xe0 && s[i + 1] < 0xa0) {
                return false; /* overlong */
            }
            if (c == 0xed && s[i + 1] >= 0xa0) {
                return false; /* UTF-16 surrogate U+D800..U+DFFF */
            }
            i += 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            if (i + 3 >= len || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 ||
                (s[i + 3] & 0xc0) != 0x80) {
                return false;
            }
            if (c == 0xf0 && s[i + 1] < 0x90) {
                return false; /* overlong */
            }
            if (c == 0xf4 && s[i + 1] >= 0x90) {
                return false; /* beyond U+10FFFF */
            }
            i += 4;
        } else {
            /* A continuation byte without a lead, 0xc0, 0xc1, or 0xf5..0xff. */
            return false;
        }
    }
    return true;
}
