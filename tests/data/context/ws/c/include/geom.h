#ifndef GEOM_H
#define GEOM_H
#define GEOM_PI 3.14159

/* A point. */
struct point { double x; double y; };

/* Area of a circle of radius r. */
double circle_area(double r);
#endif
