/* placeholder: being written */
#include "proto/codec.h"
