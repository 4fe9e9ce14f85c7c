#include <stdio.h>
#include "geom.h"

int main(void) {
    printf("%f\n", circle_area(2.0));
    return 0;
}
