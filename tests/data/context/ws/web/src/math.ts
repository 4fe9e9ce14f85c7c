/** Sum of two numbers. */
export function add(a: number, b: number): number {
  return a + b;
}

export interface Shape {
  area(): number;
}

export class Vec implements Shape {
  constructor(public x: number, public y: number) {}
  /** Length of the vector. */
  length(): number {
    return Math.hypot(this.x, this.y);
  }
  area(): number { return 0; }
}

export const ORIGIN = new Vec(0, 0);
export const scale = (v: Vec, k: number): Vec => new Vec(v.x * k, v.y * k);
