package com.example.app;

import com.example.geo.Circle;
import java.util.List;

public class Main {
    public static void main(String[] args) {
        System.out.println(new Circle(2).area());
    }
}
