import { add, Vec as V } from './math';
import * as m from './math';
import React from 'react';

export function total(v: V): number {
  return add(v.x, v.y) + m.ORIGIN.x;
}
