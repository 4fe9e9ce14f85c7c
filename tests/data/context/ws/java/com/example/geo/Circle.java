package com.example.geo;

/** A circle. */
public class Circle {
    public static final double PI = 3.14159;
    private final double r;

    public Circle(double r) { this.r = r; }

    /** The area. */
    public double area() { return PI * r * r; }
}
