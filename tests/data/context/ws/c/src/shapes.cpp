#include "../include/geom.h"

namespace geo {
// A square.
class Square {
 public:
  explicit Square(double s);
  double area() const { return s_ * s_; }
 private:
  double s_;
};
}
