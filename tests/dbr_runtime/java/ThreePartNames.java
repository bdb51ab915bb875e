package streamops.dbr;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.Function1;
import scala.Option;
import scala.collection.immutable.Seq;
import scala.runtime.BoxedUnit;

/**
 * A session extension (`spark.sql.extensions`, after Delta's) whose parser accepts a Unity Catalog
 * name where Spark asks for a table identifier.
 *
 * <p>Delta's `DeltaTableBuilder.tableName("main.claims.t")` parses its name with
 * `parseTableIdentifier`, which in Apache Spark allows at most `db.table`; Databricks' parser
 * takes `catalog.schema.table`. For a catalog served by LocalUnityCatalog this parser returns the
 * three parts; everything else goes to the wrapped parser unchanged.
 */
public class ThreePartNames implements Function1<SparkSessionExtensions, BoxedUnit> {
  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectParser((session, parser) -> new Parser(session, parser));
    return BoxedUnit.UNIT;
  }

  private static final class Parser implements ParserInterface {
    private final SparkSession session;
    private final ParserInterface delegate;

    Parser(SparkSession session, ParserInterface delegate) {
      this.session = session;
      this.delegate = delegate;
    }

    @Override
    public TableIdentifier parseTableIdentifier(String text) throws ParseException {
      Seq<String> parts = delegate.parseMultipartIdentifier(text);
      if (parts.size() == 3 && isLocalUnityCatalog(parts.apply(0))) {
        return new TableIdentifier(parts.apply(2), Option.apply(parts.apply(1)),
            Option.apply(parts.apply(0)));
      }
      return delegate.parseTableIdentifier(text);
    }

    private boolean isLocalUnityCatalog(String name) {
      String plugin = session.conf().get("spark.sql.catalog." + name, "");
      return LocalUnityCatalog.class.getName().equals(plugin);
    }

    @Override
    public LogicalPlan parsePlan(String text) throws ParseException {
      return delegate.parsePlan(text);
    }

    @Override
    public LogicalPlan parsePlanWithParameters(String text, ParameterContext context)
        throws ParseException {
      return delegate.parsePlanWithParameters(text, context);
    }

    @Override
    public Expression parseExpression(String text) throws ParseException {
      return delegate.parseExpression(text);
    }

    @Override
    public FunctionIdentifier parseFunctionIdentifier(String text) throws ParseException {
      return delegate.parseFunctionIdentifier(text);
    }

    @Override
    public Seq<String> parseMultipartIdentifier(String text) throws ParseException {
      return delegate.parseMultipartIdentifier(text);
    }

    @Override
    public LogicalPlan parseQuery(String text) throws ParseException {
      return delegate.parseQuery(text);
    }

    @Override
    public StructType parseRoutineParam(String text) throws ParseException {
      return delegate.parseRoutineParam(text);
    }

    @Override
    public StructType parseTableSchema(String text) throws ParseException {
      return delegate.parseTableSchema(text);
    }

    @Override
    public DataType parseDataType(String text) throws ParseException {
      return delegate.parseDataType(text);
    }
  }
}
